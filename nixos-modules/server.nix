# services.zk0.server: the federation server (Flower SuperLink + zk0's session controller),
# run as `zk0bot server start --foreground` under systemd.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.services.zk0.server;
  common = import ./common.nix { inherit lib; };

  stateDir = "/var/lib/zk0-server";

  args =
    [
      (lib.getExe' cfg.package "zk0bot")
      "server"
      "start"
      "--foreground"
      "--state-dir"
      stateDir
      "--host"
      cfg.host
      "--port"
      (toString cfg.port)
      "--min-clients"
      (toString cfg.minClients)
      "--rounds"
      (toString cfg.rounds)
    ]
    ++ common.settingsArgs cfg.settings
    ++ lib.optional (cfg.tls == true) "--tls"
    ++ lib.optional (cfg.tls == false) "--insecure"
    ++ builtins.concatMap (name: [
      "--san"
      name
    ]) cfg.subjectAltNames;

  allowArgs = [
    (lib.getExe' cfg.package "zk0bot")
    "server"
    "allow"
    "--state-dir"
    stateDir
    "--wait"
    "300"
  ]
  ++ map (key: "${key}") cfg.authorizedKeyFiles; # a path literal goes to the store: keys are public

in
{
  options.services.zk0.server = {
    enable = lib.mkEnableOption "the zk0 federated learning server (Flower SuperLink and session controller)";

    package = lib.mkPackageOption pkgs "zk0" { };

    host = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        Address the SuperLink listens on. On a loopback address the server runs in plaintext;
        on any other address it creates a CA and a server certificate in
        {file}`/var/lib/zk0-server/tls` on first start and admits only nodes whose public key
        was allowed with `zk0bot server allow` (see {option}`services.zk0.server.tls`).
      '';
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 8000;
      description = "Flower's HTTP port (Fleet, Control and runtime APIs); clients connect to `host:port`.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Whether to open {option}`services.zk0.server.port` in the firewall.";
    };

    minClients = lib.mkOption {
      type = lib.types.ints.positive;
      default = 2;
      example = 3;
      description = "Nodes that must be online before a session (and each of its rounds) starts.";
    };

    rounds = lib.mkOption {
      type = lib.types.ints.positive;
      default = 3;
      example = 10;
      description = "Federated rounds per session.";
    };

    settings = lib.mkOption {
      type = common.settingsType;
      default = { };
      example = lib.literalExpression ''
        {
          local-steps = 200;
          learning-rate = "1e-4";
          model = "lerobot/smolvla_base";
        }
      '';
      description = ''
        Run settings of the federation (`[tool.flwr.app.config]` keys), each passed as
        `--set key=value`. zk0bot validates names and values. Floats are written with
        `builtins.toJSON`; give a string (`"1e-4"`) to pass a value exactly as written.
      '';
    };

    tls = lib.mkOption {
      type = lib.types.nullOr lib.types.bool;
      default = null;
      example = false;
      description = ''
        `null`: zk0bot decides (TLS and node authentication unless {option}`services.zk0.server.host`
        is a loopback address). `true` passes `--tls`; `false` passes `--insecure` (plaintext, no
        node authentication: only for closed networks).
      '';
    };

    subjectAltNames = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [
        "fl.example.org"
        "192.0.2.10"
      ];
      description = "Extra names (DNS names or IP addresses) for the server certificate, each passed as `--san`.";
    };

    authorizedKeyFiles = lib.mkOption {
      type = lib.types.listOf lib.types.path;
      default = [ ];
      example = lib.literalExpression "[ ./keys/arm1.pub ./keys/arm2.pub ]";
      description = ''
        Node public keys (from `zk0bot client keygen`; public, so the store is fine) allowed after
        every start with `zk0bot server allow --wait`, which waits for the SuperLink and accepts a
        key allowed already. Keys can also be allowed by hand (as root):
        `zk0bot server allow --state-dir /var/lib/zk0-server NODE.pub`.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !(cfg.tls == false && cfg.subjectAltNames != [ ]);
        message = "services.zk0.server.subjectAltNames needs TLS: no certificate is made when services.zk0.server.tls = false.";
      }
      {
        assertion = !(cfg.tls == false && cfg.authorizedKeyFiles != [ ]);
        message = "services.zk0.server.authorizedKeyFiles needs TLS: with services.zk0.server.tls = false any node may join.";
      }
    ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];

    # For the operator: `zk0bot status --state-dir /var/lib/zk0-server`, and `zk0bot server allow
    # --state-dir /var/lib/zk0-server NODE.pub` (as root) to admit a key by hand.
    environment.systemPackages = [ cfg.package ];

    systemd.services.zk0-server = {
      description = "zk0 federated learning server";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # Flower starts flower-superexec and the app processes by name, from PATH.
      path = [ cfg.package ];
      environment = {
        ZK0_HOME = stateDir;
        HOME = stateDir;
        # The server builds the initial policy; hub downloads are cached in the state dir.
        HF_HOME = "${stateDir}/huggingface";
      };
      serviceConfig = common.hardening // {
        ExecStart = utils.escapeSystemdExecArgs args;
        # Allow the configured node keys once the SuperLink is up (a key allowed already is fine).
        ExecStartPost = lib.mkIf (cfg.authorizedKeyFiles != [ ]) (utils.escapeSystemdExecArgs allowArgs);
        DynamicUser = true;
        StateDirectory = "zk0-server";
        StateDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        Restart = "on-failure";
        RestartSec = 5;
        # zk0bot stops the SuperLink, controller and app processes on SIGTERM; give it time.
        TimeoutStopSec = 60;
        PrivateDevices = true;
      };
    };
  };
}
