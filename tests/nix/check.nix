# `checks.<system>.module-contracts`: the contract cases of tests/test_nix.py that matter most,
# evaluated with the stand-in lib when the flake is checked, so `nix flake check` fails if the
# modules stop producing the intended units. tests/test_nix.py has the full set.
{ pkgs }:
let
  eval = config: import ./eval.nix { inherit config; };

  good = eval {
    services.zk0.server = {
      enable = true;
      host = "0.0.0.0";
    };
    services.zk0.client = {
      enable = true;
      datasetUri = "hf:me/ds";
      serverAddress = "server:8000";
      caCertFile = "/etc/zk0/ca.pem";
      nodeKeyFile = "/run/secrets/node-key";
      hfTokenFile = "/run/secrets/hf-token";
    };
  };
  bad = eval { services.zk0.client.enable = true; };

  client = good.units.zk0-client.serviceConfig;
  facts = {
    noFailedAssertions = good.failedAssertions == [ ];
    dynamicUser = client.DynamicUser && good.units.zk0-server.serviceConfig.DynamicUser;
    credentials =
      client.LoadCredential == [
        "ca-cert:/etc/zk0/ca.pem"
        "node-key:/run/secrets/node-key"
        "hf-token:/run/secrets/hf-token"
      ];
    tokenPathOnly = good.units.zk0-client.environment.HF_TOKEN_PATH == "%d/hf-token";
    firewallClosed = good.firewall == [ ];
    datasetAsserted = builtins.elem "services.zk0.client.datasetUri must be set: the node's dataset, `hf:owner/name` or `local:/abs/path`." bad.failedAssertions;
  };
  failed = builtins.filter (name: !facts.${name}) (builtins.attrNames facts);
in
if failed != [ ] then
  throw "zk0 module contract failed: ${builtins.concatStringsSep ", " failed}"
else
  pkgs.writeText "zk0-module-contracts.json" (builtins.toJSON facts)
