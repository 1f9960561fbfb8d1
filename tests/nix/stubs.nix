# Stub declarations of the NixOS options the zk0 modules define values for. Types are loose on
# purpose (a unit is a freeform attribute set): the contract tests check the values the modules
# produce, not NixOS's own validation of them.
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.attrs;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    networking.hostName = mkOption {
      type = types.str;
      default = "nixos";
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    networking.firewall.allowedUDPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };
    systemd.services = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    users.users = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    hardware.graphics.enable = mkOption {
      type = types.bool;
      default = false;
    };
    hardware.nvidia-container-toolkit.enable = mkOption {
      type = types.bool;
      default = false;
    };
  };
}
