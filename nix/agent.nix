# The Fleetwave agent on a NixOS host (SPEC §14). The options mirror agent.toml; the module
# writes /etc/fleetwave/agent.toml and runs `fleetwave-agent run` as root (it sets the system
# profile and switches the system).
self:
{ config, lib, pkgs, ... }:
let
  cfg = config.services.fleetwave-agent;
  toml = pkgs.formats.toml { };
  withoutNulls = lib.filterAttrs (_: value: value != null);
  settings = {
    controlPlane = cfg.controlPlane;
    hostname = cfg.hostname;
    keyFile = cfg.keyFile;
    stateDir = "/var/lib/fleetwave-agent";
    profile = "/nix/var/nix/profiles/system";
    substituters = cfg.substituters;
    trustedPublicKeys = cfg.trustedPublicKeys;
    switchCommand = cfg.switchCommand;
    activationTimeoutSeconds = cfg.activationTimeoutSeconds;
    reboot = cfg.reboot;
    probes = map withoutNulls cfg.probes;
  };
  probe = lib.types.submodule {
    options = {
      name = lib.mkOption { type = lib.types.strMatching ".{1,128}"; description = "Reported as the probe's name."; };
      kind = lib.mkOption {
        type = lib.types.enum [ "systemd-failed-units" "http" "tcp" "exec" ];
        description = "systemd-failed-units: no failed units; http: GET target answers 2xx; tcp: target (host:port) accepts; exec: target (a shell command) exits 0.";
      };
      target = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; description = "URL, host:port or command, by kind."; };
      intervalSeconds = lib.mkOption { type = lib.types.ints.between 1 86400; default = 10; };
      timeoutSeconds = lib.mkOption { type = lib.types.ints.between 1 86400; default = 5; };
      mode = lib.mkOption { type = lib.types.enum [ "enforce" "observe" ]; default = "enforce"; };
      failAfter = lib.mkOption { type = lib.types.ints.positive; default = 3; description = "Failures in a row that fail an enforce probe."; };
    };
  };
in
{
  options.services.fleetwave-agent = {
    enable = lib.mkEnableOption "the Fleetwave agent";
    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.fleetwave-agent;
      defaultText = lib.literalExpression "fleetwave.packages.\${system}.fleetwave-agent";
    };
    controlPlane = lib.mkOption { type = lib.types.str; example = "https://fleet.example.com"; description = "The control plane's URL."; };
    hostname = lib.mkOption {
      type = lib.types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "This host's name in fleet.json.";
    };
    keyFile = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/fleetwave-agent/host.key";
      description = "The host's Ed25519 secret (`fleetwave-agent keygen --out` writes it and prints the public key for fleet.json). Never put it in the Nix store.";
    };
    substituters = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; description = "Where closures are fetched from (empty: Nix's configured substituters)."; };
    trustedPublicKeys = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; description = "Keys a fetched closure must be signed by (empty: Nix's configured keys)."; };
    switchCommand = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ "${pkgs.systemd}/bin/systemd-run" "--unit=fleetwave-switch" "--collect" "--service-type=exec" "--quiet" ];
      defaultText = lib.literalExpression ''[ "''${pkgs.systemd}/bin/systemd-run" "--unit=fleetwave-switch" "--collect" "--service-type=exec" "--quiet" ]'';
      description = "Argv prefix the switch runs through: its own transient unit, so that an agent restart cannot take it down.";
    };
    activationTimeoutSeconds = lib.mkOption { type = lib.types.ints.between 1 86400; default = 300; };
    reboot = lib.mkOption { type = lib.types.enum [ "never" "allowed" ]; default = "never"; description = "Reboot into a closure whose kernel, initrd or modules differ (otherwise it is staged for the next boot)."; };
    probes = lib.mkOption { type = lib.types.listOf probe; default = [ ]; description = "Health probes run during the soak."; };
  };

  config = lib.mkIf cfg.enable {
    environment.etc."fleetwave/agent.toml".source = toml.generate "agent.toml" settings;
    systemd.services.fleetwave-agent = {
      description = "Fleetwave agent";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      path = [ config.nix.package pkgs.systemd pkgs.coreutils pkgs.bash ];
      # A switch must not restart the agent that started it: the switch runs in its own unit
      # and the agent follows /run/current-system; a new agent takes over at the next boot or
      # restart.
      restartIfChanged = false;
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/fleetwave-agent run --config /etc/fleetwave/agent.toml";
        Restart = "always";
        RestartSec = 5;
        StateDirectory = "fleetwave-agent";
        StateDirectoryMode = "0700";
        UMask = "0077";
      };
    };
  };
}
