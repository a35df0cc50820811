# The Fleetwave control plane (`fleetwave serve`) as a hardened systemd service: a dynamic
# user, its SQLite database in its own state directory, the rest of the system read-only.
self:
{ config, lib, pkgs, ... }:
let
  cfg = config.services.fleetwave;
  optional = flag: value: lib.optionals (value != null) [ flag (toString value) ];
in
{
  options.services.fleetwave = {
    enable = lib.mkEnableOption "the Fleetwave control plane";
    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.fleetwave;
      defaultText = lib.literalExpression "fleetwave.packages.\${system}.fleetwave";
    };
    listen = lib.mkOption { type = lib.types.str; default = "127.0.0.1:8080"; description = "Address the API and dashboard listen on (put a TLS proxy in front)."; };
    publicUrl = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; example = "https://fleet.example.com"; description = "The URL operators use (https: session cookies are Secure)."; };
    trustFile = lib.mkOption { type = lib.types.path; description = "trust.json: the CI release keys and the freshness window."; };
    manifestsDir = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; description = "A directory CI writes signed releases to (fleet.json, rollouts/), polled."; };
    manifestsPollMs = lib.mkOption { type = lib.types.ints.positive; default = 30000; };
    planTickMs = lib.mkOption { type = lib.types.ints.positive; default = 15000; };
    dist = lib.mkOption { type = lib.types.nullOr lib.types.path; default = null; description = "The dashboard build (`trunk build --release` of frontend/); null serves the API only."; };
    extraArgs = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; description = "More `fleetwave serve` flags (limits, timeouts)."; };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.fleetwave = {
      description = "Fleetwave control plane";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      environment = {
        FLEETWAVE_LISTEN = cfg.listen;
        FLEETWAVE_DB = "/var/lib/fleetwave/fleetwave.db";
        FLEETWAVE_TRUST = "${cfg.trustFile}";
        FLEETWAVE_DIST = if cfg.dist == null then "/var/empty" else "${cfg.dist}";
      };
      serviceConfig = {
        ExecStart = lib.escapeShellArgs (
          [ "${cfg.package}/bin/fleetwave" "serve" "--plan-tick-ms" (toString cfg.planTickMs) "--manifests-poll-ms" (toString cfg.manifestsPollMs) ]
          ++ optional "--manifests-dir" cfg.manifestsDir
          ++ optional "--public-url" cfg.publicUrl
          ++ cfg.extraArgs
        );
        # SIGHUP reloads trust.json.
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = 2;
        DynamicUser = true;
        StateDirectory = "fleetwave";
        StateDirectoryMode = "0700";
        UMask = "0077";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        LimitNOFILE = 65536;
      };
    };
  };
}
