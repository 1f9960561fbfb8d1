# services.zk0.client: one federation node (a Flower SuperNode training SmolVLA on a local or
# hub dataset), run as `zk0bot client start URI --foreground` under systemd.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.services.zk0.client;
  common = import ./common.nix { inherit lib; };

  stateDir = "/var/lib/zk0-client";
  cacheDir = "/var/cache/zk0-client";

  # Secrets reach the service through systemd credentials: the unit names files outside the
  # store, systemd copies them into $CREDENTIALS_DIRECTORY (%d) readable only by the service.
  credentials =
    # A Nix path literal for the (public) CA is copied to the store by the interpolation.
    lib.optional (cfg.caCertFile != null) "ca-cert:${cfg.caCertFile}"
    ++ lib.optional (cfg.nodeKeyFile != null) "node-key:${cfg.nodeKeyFile}"
    ++ lib.optional (cfg.hfTokenFile != null) "hf-token:${cfg.hfTokenFile}";

  args =
    [
      (lib.getExe' cfg.package "zk0bot")
      "client"
      "start"
      cfg.datasetUri
      "--foreground"
      "--state-dir"
      stateDir
      "--server"
      cfg.serverAddress
      "--name"
      cfg.name
      "--device"
      (if cfg.cuda then "cuda" else "cpu")
    ]
    ++ lib.optionals (cfg.cameraMap != { }) [
      "--camera-map"
      (builtins.concatStringsSep "," (lib.mapAttrsToList (camera: slot: "${camera}=${slot}") cfg.cameraMap))
    ];

  # %d (the credentials directory) must reach systemd unescaped, so these go after the escaped args.
  credentialArgs =
    lib.optionals (cfg.caCertFile != null) [ "--ca-cert %d/ca-cert" ]
    ++ lib.optionals (cfg.nodeKeyFile != null) [ "--key %d/node-key" ];

  inStore = path: path != null && lib.hasPrefix "${builtins.storeDir}/" (toString path);
  isAbsolute = path: path == null || lib.hasPrefix "/" path;
  secretFile =
    name: path:
    lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = path;
      description = ''
        Absolute path of the ${name}, read by systemd with `LoadCredential` when the service
        starts. It must not be in the Nix store (which every user can read): use a secret
        manager's path (agenix, sops-nix) or a file with mode 0600 owned by root.
      '';
    };
in
{
  options.services.zk0.client = {
    enable = lib.mkEnableOption "a zk0 federation node (Flower SuperNode training SmolVLA on a private dataset)";

    package = lib.mkPackageOption pkgs "zk0" {
      extraDescription = " With `cuda = true` use a CUDA environment such as the flake's `zk0-cuda`.";
    };

    name = lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9._-]{1,64}";
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "The node's name on this machine (log and key names).";
    };

    datasetUri = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "hf:me/my-so100";
      description = ''
        The node's LeRobot-format SO-100/SO-101 dataset: `hf:owner/name[@revision]` (private
        hub datasets need {option}`services.zk0.client.hfTokenFile`) or `local:/abs/path`.
        It never leaves the machine; only trained parameters do.
      '';
    };

    serverAddress = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "fl.example.org:8000";
      description = "The federation server, `host:port`.";
    };

    cameraMap = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      example = {
        front = "camera1";
        wrist = "camera2";
      };
      description = "Maps the dataset's camera names onto the model's `camera1..N` (default: sorted order).";
    };

    caCertFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/etc/zk0/ca.pem";
      description = ''
        The server's CA certificate ({file}`tls/ca.pem` in the server's state dir; public).
        Set together with {option}`services.zk0.client.nodeKeyFile` to connect with TLS and node
        authentication; leave both unset for a plaintext server.
      '';
    };

    nodeKeyFile = secretFile "node's private key (from `zk0bot client keygen`; the server operator allows its `.pub`)" "/run/secrets/zk0-node-key";

    hfTokenFile = secretFile "Hugging Face token file (for private `hf:` datasets)" "/run/secrets/hf-token";

    cuda = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Train on the NVIDIA GPU: passes `--device cuda` and gives the service access to the
        NVIDIA device nodes. The host needs the NVIDIA driver
        (`hardware.nvidia`, `hardware.graphics.enable = true`) and a CUDA-enabled
        {option}`services.zk0.client.package`.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.datasetUri != null;
        message = "services.zk0.client.datasetUri must be set: the node's dataset, `hf:owner/name` or `local:/abs/path`.";
      }
      {
        assertion =
          cfg.datasetUri == null || lib.hasPrefix "hf:" cfg.datasetUri || lib.hasPrefix "local:/" cfg.datasetUri;
        message = "services.zk0.client.datasetUri = \"${toString cfg.datasetUri}\" is not `hf:owner/name` or `local:/abs/path`.";
      }
      {
        assertion = cfg.serverAddress != null;
        message = "services.zk0.client.serverAddress must be set: the federation server as `host:port`.";
      }
      {
        assertion = (cfg.caCertFile == null) == (cfg.nodeKeyFile == null);
        message = "services.zk0.client.caCertFile and services.zk0.client.nodeKeyFile go together: a TLS server admits only nodes whose key it allowed, and a node without the server's CA cannot use TLS. Set both (TLS) or neither (plaintext).";
      }
      {
        assertion = !(inStore cfg.nodeKeyFile) && !(inStore cfg.hfTokenFile);
        message = "services.zk0.client.nodeKeyFile and services.zk0.client.hfTokenFile must not be in the Nix store, which every user can read.";
      }
      {
        assertion = isAbsolute cfg.nodeKeyFile && isAbsolute cfg.hfTokenFile;
        message = "services.zk0.client.nodeKeyFile and services.zk0.client.hfTokenFile must be absolute paths.";
      }
    ];

    warnings = lib.optional (
      cfg.cuda && !config.hardware.graphics.enable
    ) "services.zk0.client.cuda is set but hardware.graphics.enable is not: the NVIDIA user-space driver (libcuda) will be missing.";

    systemd.services.zk0-client = {
      description = "zk0 federation node ${cfg.name}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # Flower starts flower-superexec and the app processes by name, from PATH.
      path = [ cfg.package ];
      environment =
        {
          ZK0_HOME = stateDir;
          HOME = stateDir;
          # Hub datasets are cached here, not in the state dir.
          HF_HOME = "${cacheDir}/huggingface";
        }
        // lib.optionalAttrs (cfg.hfTokenFile != null) {
          # A path to the token, never the token: systemd expands %d to the credentials directory.
          HF_TOKEN_PATH = "%d/hf-token";
        };
      serviceConfig = common.hardening // {
        ExecStart = builtins.concatStringsSep " " ([ (utils.escapeSystemdExecArgs args) ] ++ credentialArgs);
        LoadCredential = credentials;
        DynamicUser = true;
        StateDirectory = "zk0-client";
        StateDirectoryMode = "0700";
        CacheDirectory = "zk0-client";
        CacheDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        Restart = "on-failure";
        RestartSec = 10;
        # zk0bot stops its SuperNode and app processes on SIGTERM; a training step may take a while.
        TimeoutStopSec = 120;
        # Without CUDA no device nodes are needed. With CUDA the GPUs must be visible, so
        # PrivateDevices is off and DevicePolicy/DeviceAllow admit only the NVIDIA devices.
        PrivateDevices = !cfg.cuda;
        DevicePolicy = lib.mkIf cfg.cuda "closed";
        DeviceAllow = lib.mkIf cfg.cuda [
          "char-nvidiactl"
          "char-nvidia-caps"
          "char-nvidia-frontend"
          "char-nvidia-uvm"
        ];
        SupplementaryGroups = lib.mkIf cfg.cuda [ "video" ];
      };
    };
  };
}
