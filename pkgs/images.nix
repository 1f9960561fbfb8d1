# OCI images for the server and for nodes, from the same venv as the `zk0` package.
# `nix build .#server-image && ./result | docker load` (streamLayeredImage writes a script that
# streams the image tarball).
{ pkgs, zk0 }:
let
  stateDir = "/var/lib/zk0";

  image =
    {
      role,
      entrypoint,
      cmd ? [ ],
      ports ? [ ],
      env ? [ ],
    }:
    pkgs.dockerTools.streamLayeredImage {
      name = "zk0-${role}";
      tag = "latest";
      contents = [
        zk0
        pkgs.cacert
        # /etc/passwd and /etc/group with root and nobody.
        pkgs.dockerTools.fakeNss
      ];
      # The state dir belongs to nobody, who runs zk0bot; Python and torch need a /tmp.
      fakeRootCommands = ''
        mkdir -p .${stateDir} tmp
        chown 65534:65534 .${stateDir}
        chmod 0700 .${stateDir}
        chmod 1777 tmp
      '';
      enableFakechroot = false;
      config = {
        Entrypoint = [ "${zk0}/bin/zk0bot" ] ++ entrypoint;
        Cmd = cmd;
        User = "65534:65534";
        WorkingDir = stateDir;
        Volumes.${stateDir} = { };
        ExposedPorts = builtins.listToAttrs (
          map (port: {
            name = "${toString port}/tcp";
            value = { };
          }) ports
        );
        Env = [
          "ZK0_HOME=${stateDir}"
          "HOME=${stateDir}"
          "HF_HOME=${stateDir}/huggingface"
          "PATH=${zk0}/bin"
          "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
        ] ++ env;
      };
    };
in
{
  # docker run -v zk0-server:/var/lib/zk0 -p 8000:8000 zk0-server:latest --min-clients 2 --rounds 10
  # Cmd holds the defaults; arguments given to `docker run` replace it.
  server-image = image {
    role = "server";
    entrypoint = [
      "server"
      "start"
      "--foreground"
    ];
    cmd = [
      "--host"
      "0.0.0.0"
      "--port"
      "8000"
    ];
    ports = [ 8000 ];
  };

  # docker run -v zk0-node:/var/lib/zk0 -v ./ca.pem:/ca.pem:ro -v ./node-key:/node-key:ro \
  #   zk0-client:latest hf:me/ds --server fl.example.org:8000 --ca-cert /ca.pem --key /node-key
  client-image = image {
    role = "client";
    entrypoint = [
      "client"
      "start"
      "--foreground"
    ];
    env = [
      # With the NVIDIA container toolkit (`--gpus all`): which devices and driver parts to mount,
      # and where it mounts libcuda (Nix's glibc does not read the host's ld.so.cache).
      "NVIDIA_VISIBLE_DEVICES=all"
      "NVIDIA_DRIVER_CAPABILITIES=compute,utility"
      "LD_LIBRARY_PATH=/usr/lib64:/usr/lib/x86_64-linux-gnu:/usr/lib/aarch64-linux-gnu"
    ];
  };
}
