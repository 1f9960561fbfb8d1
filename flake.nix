{
  description = "zk0: federated SmolVLA training for SO-100/SO-101 robots on Flower, as a Nix appliance";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

    pyproject-nix = {
      url = "github:pyproject-nix/pyproject.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    uv2nix = {
      url = "github:pyproject-nix/uv2nix";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.pyproject-nix.follows = "pyproject-nix";
    };

    pyproject-build-systems = {
      url = "github:pyproject-nix/build-system-pkgs";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.pyproject-nix.follows = "pyproject-nix";
      inputs.uv2nix.follows = "uv2nix";
    };
  };

  # Only builtins at this level: listing outputs (nixosModules, app and package names) must not
  # fetch nixpkgs.
  outputs =
    {
      self,
      nixpkgs,
      pyproject-nix,
      uv2nix,
      pyproject-build-systems,
    }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) systems
        );

      # uv.lock and pyproject.toml, loaded once for every system and variant.
      workspace = uv2nix.lib.workspace.loadWorkspace { workspaceRoot = ./.; };

      perSystem = forAllSystems (
        system:
        import ./pkgs {
          pkgs = nixpkgs.legacyPackages.${system};
          inherit
            workspace
            pyproject-nix
            pyproject-build-systems
            ;
          inherit (self) nixosModules;
        }
      );
      pick = attr: forAllSystems (system: perSystem.${system}.${attr});

      # Without an overlay, the modules' `package` defaults to this flake's build for the host.
      defaultPackage =
        service:
        { lib, pkgs, config, ... }:
        {
          services.zk0.${service}.package =
            let
              built = self.packages.${pkgs.stdenv.hostPlatform.system};
            in
            lib.mkDefault (if service == "client" && config.services.zk0.client.cuda then built.zk0-cuda else built.zk0);
        };
    in
    {
      packages = pick "packages";
      apps = pick "apps";
      devShells = pick "devShells";
      checks = pick "checks";

      overlays.default = final: prev: {
        zk0 = self.packages.${prev.stdenv.hostPlatform.system}.zk0;
        zk0-cuda = self.packages.${prev.stdenv.hostPlatform.system}.zk0-cuda;
      };

      # Nix 2.8's `flake check` rejects a bare path here, hence `{ imports = [ ... ]; }`.
      nixosModules = {
        server = {
          imports = [
            ./nixos-modules/server.nix
            (defaultPackage "server")
          ];
        };
        client = {
          imports = [
            ./nixos-modules/client.nix
            (defaultPackage "client")
          ];
        };
        default = {
          imports = [
            self.nixosModules.server
            self.nixosModules.client
          ];
        };
      };
    };
}
