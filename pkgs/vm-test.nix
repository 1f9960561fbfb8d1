# NixOS VM test: one server and two nodes on a virtual network run a one-round federated session
# on the offline kit, with TLS and node authentication, through the services.zk0 modules.
# Run with `nix flake check` or `nix build .#checks.x86_64-linux.vm-federation` (needs KVM).
{
  pkgs,
  zk0,
  offline-kit,
  nixosModules,
}:
let
  # Node key pairs made with `zk0bot client keygen` at build time. A private key in the store is
  # acceptable only in a test; the test script copies it out of the store before use.
  nodeKeys = pkgs.runCommand "zk0-test-node-keys" { } ''
    export HOME=$TMPDIR
    ${zk0}/bin/zk0bot client keygen client1 --state-dir $out
    ${zk0}/bin/zk0bot client keygen client2 --state-dir $out
  '';

  tiny = {
    model = "${offline-kit}/backbone";
    image-size = 64;
    chunk-size = 10;
    n-action-steps = 10;
    local-steps = 3;
    batch-size = 4;
  };

  node =
    index:
    { lib, ... }:
    {
      imports = [ nixosModules.client ];
      virtualisation.memorySize = 4096;
      virtualisation.cores = 2;
      services.zk0.client = {
        enable = true;
        package = zk0;
        name = "client${toString index}";
        datasetUri = "local:${offline-kit}/datasets/client-${toString (index - 1)}";
        serverAddress = "server:8000";
        caCertFile = "/run/zk0/ca.pem";
        nodeKeyFile = "/run/zk0/node-key";
      };
      # Started by the test script once the server's CA and the node key are in place.
      systemd.services.zk0-client.wantedBy = lib.mkForce [ ];
    };
in
pkgs.testers.runNixOSTest {
  name = "zk0-federation";

  nodes = {
    server = {
      imports = [ nixosModules.server ];
      virtualisation.memorySize = 4096;
      virtualisation.cores = 2;
      services.zk0.server = {
        enable = true;
        package = zk0;
        host = "0.0.0.0";
        openFirewall = true;
        minClients = 2;
        rounds = 1;
        subjectAltNames = [ "server" ];
        settings = tiny;
      };
    };
    client1 = node 1;
    client2 = node 2;
  };

  testScript = ''
    start_all()
    server.wait_for_unit("zk0-server.service")
    server.wait_for_open_port(8000)
    server.wait_until_succeeds("test -s /var/lib/zk0-server/tls/ca.pem", timeout=120)
    ca = server.succeed("cat /var/lib/zk0-server/tls/ca.pem")
    # What the operator does: admit the nodes' public keys.
    server.succeed(
        "zk0bot server allow --state-dir /var/lib/zk0-server"
        " ${nodeKeys}/keys/client1.pub ${nodeKeys}/keys/client2.pub"
    )

    for i, client in enumerate([client1, client2], start=1):
        client.wait_for_unit("network-online.target")
        client.succeed("install -d -m 0700 /run/zk0")
        client.succeed(f"install -m 0600 ${nodeKeys}/keys/client{i} /run/zk0/node-key")
        client.succeed(f"cat > /run/zk0/ca.pem <<'EOF'\n{ca}EOF")
        client.systemctl("start zk0-client.service")
        client.wait_for_unit("zk0-client.service")

    # One round: both nodes train, the server aggregates and checkpoints.
    server.wait_until_succeeds("test -s /var/lib/zk0-server/server/history.jsonl", timeout=1200)
    server.succeed("test -s /var/lib/zk0-server/server/global.safetensors")
    print(server.succeed("zk0bot status --state-dir /var/lib/zk0-server"))

    # The sandbox holds: the services run as dynamic users, the key is a credential.
    client1.succeed("systemctl show -p DynamicUser zk0-client.service | grep -q yes")
    client1.fail("grep -q BEGIN /proc/$(systemctl show -p MainPID --value zk0-client.service)/environ")
  '';
}
