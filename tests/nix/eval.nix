# Evaluates the zk0 NixOS modules with the stand-in lib (./lib.nix) and stub option declarations
# (./stubs.nix), returning what a contract test compares: the units, firewall ports, users,
# failed assertion messages and warnings. `config` is one more module (usually an attribute set
# of services.zk0.* values). Nothing here touches nixpkgs.
{
  config ? { },
}:
let
  lib = import ./lib.nix;
  pkg = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = "zk0bot";
  };
  pkgs = {
    zk0 = pkg "zk0";
    zk0-cuda = pkg "zk0-cuda";
  };
  evaluated = lib.evalModules {
    modules = [
      ./stubs.nix
      ../../nixos-modules/server.nix
      ../../nixos-modules/client.nix
      config
    ];
    specialArgs = {
      inherit pkgs;
      utils = import ./utils.nix;
    };
  };
  cfg = evaluated.config;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
in
# Like NixOS, which refuses to build a system with failed assertions before it looks at the
# units, a failed assertion returns only the messages.
if failedAssertions != [ ] then
  { inherit failedAssertions; }
else
{
  units = cfg.systemd.services;
  firewall = cfg.networking.firewall.allowedTCPPorts;
  users = cfg.users.users;
  systemPackages = cfg.environment.systemPackages;
  inherit failedAssertions;
  inherit (cfg) warnings;
  options = {
    server = builtins.attrNames evaluated.options.services.zk0.server;
    client = builtins.attrNames evaluated.options.services.zk0.client;
  };
}
