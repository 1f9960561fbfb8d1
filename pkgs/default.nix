# Everything the flake builds for one system. Written as a plain attribute set (no callPackage at
# the top) so that listing names does not force nixpkgs.
{
  pkgs,
  workspace,
  pyproject-nix,
  pyproject-build-systems,
  nixosModules,
}:
let
  inherit (pkgs) lib;
  python = pkgs.python312;

  # The same locked package set, with or without the CUDA overrides.
  pythonSetWith =
    cuda:
    import ./python-set.nix {
      inherit
        pkgs
        lib
        python
        workspace
        pyproject-nix
        pyproject-build-systems
        cuda
        ;
    };
  pythonSet = pythonSetWith false;
  pythonSetCuda = pythonSetWith true;

  app = import ./zk0.nix;

  zk0 = app {
    inherit lib workspace;
    pythonSet = pythonSet;
    name = "zk0";
  };
  zk0-cuda = app {
    inherit lib workspace;
    pythonSet = pythonSetCuda;
    name = "zk0-cuda";
  };

  images = import ./images.nix { inherit pkgs zk0; };

  offline-kit = import ./offline-kit.nix { inherit pkgs zk0; };

  # `zk0bot <subcommand>` under a name, for `nix run .#server` / `.#client` / `.#demo`.
  subcommand =
    name: words:
    pkgs.runCommand name
      {
        nativeBuildInputs = [ pkgs.makeWrapper ];
        meta.mainProgram = name;
      }
      ''
        makeWrapper ${zk0}/bin/zk0bot $out/bin/${name} --add-flags ${lib.escapeShellArg words}
      '';
in
{
  packages = {
    default = zk0;
    inherit zk0 zk0-cuda offline-kit;
    inherit (images) server-image client-image;
  };

  apps = {
    default = {
      type = "app";
      program = "${zk0}/bin/zk0bot";
    };
    server = {
      type = "app";
      program = "${subcommand "zk0-server" "server start"}/bin/zk0-server";
    };
    client = {
      type = "app";
      program = "${subcommand "zk0-client" "client start"}/bin/zk0-client";
    };
    demo = {
      type = "app";
      program = "${subcommand "zk0-demo" "demo"}/bin/zk0-demo";
    };
  };

  devShells.default = pkgs.mkShell {
    packages = [
      python
      pkgs.uv
    ];
    env = {
      # uv manages .venv from uv.lock with the Nix Python; it must not download its own.
      UV_PYTHON_DOWNLOADS = "never";
      UV_PYTHON = python.interpreter;
    };
    shellHook = ''
      unset PYTHONPATH
    '';
  };

  checks = {
    # The fast part of the Python suite (the `slow` tests start Flower processes and train for
    # minutes), run against the same locked dependencies plus the dev group.
    unit-tests =
      let
        devEnv = pythonSet.mkVirtualEnv "zk0-dev-env" workspace.deps.all;
        src = lib.fileset.toSource {
          root = ../.;
          fileset = lib.fileset.unions [
            ../pyproject.toml
            ../tests
          ];
        };
      in
      pkgs.runCommand "zk0-unit-tests" { } ''
        export HOME=$TMPDIR
        cp -r ${src} source && chmod -R u+w source && cd source
        ${devEnv}/bin/pytest -m "not slow" -p no:cacheprovider --ignore tests/test_nix.py -q
        touch $out
      '';
    # The module contract tests (tests/nix) with the stand-in lib, run inside a build.
    module-contracts = import ../tests/nix/check.nix { inherit pkgs; };
    vm-federation = import ./vm-test.nix {
      inherit
        pkgs
        zk0
        offline-kit
        nixosModules
        ;
    };
  };
}
