{
  description = "Fleetwave: roll NixOS closures out to a fleet in waves, watched from a live dashboard";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # One workspace, one lock file; each package builds one binary of it.
      crate = pkgs: { pname, package, binary, description }:
        pkgs.rustPlatform.buildRustPackage {
          inherit pname;
          version = "0.1.0";
          src = self;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "--package" package "--bin" binary ];
          # The tests need Chromium, a Nix store and free ports: they run in CI
          # (README: the test command), not in the sandbox.
          doCheck = false;
          meta = {
            inherit description;
            license = pkgs.lib.licenses.asl20;
            mainProgram = binary;
            platforms = pkgs.lib.platforms.linux;
          };
        };
    in
    {
      packages = forAllSystems (pkgs: rec {
        fleetwave = crate pkgs {
          pname = "fleetwave";
          package = "backend";
          binary = "fleetwave";
          description = "The Fleetwave control plane (serve, operator, sign, release, simulate, demo)";
        };
        fleetwave-agent = crate pkgs {
          pname = "fleetwave-agent";
          package = "agent";
          binary = "fleetwave-agent";
          description = "The Fleetwave agent: follows the control plane on a NixOS host";
        };
        default = fleetwave;
      });

      nixosModules = {
        agent = import ./nix/agent.nix self;
        controlPlane = import ./nix/control-plane.nix self;
      };
    };
}
