# The `utils` module argument NixOS passes (nixos/lib/utils.nix): only what the zk0 modules use.
let
  escapeSystemdExecArg =
    arg:
    let
      s =
        if builtins.isPath arg then
          "${arg}"
        else if builtins.isString arg then
          arg
        else if builtins.isInt arg || builtins.isFloat arg || (arg.type or null) == "derivation" then
          toString arg
        else
          throw "escapeSystemdExecArg only allows strings, paths, numbers and derivations";
    in
    builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
in
{
  inherit escapeSystemdExecArg;
  escapeSystemdExecArgs = args: builtins.concatStringsSep " " (map escapeSystemdExecArg args);
}
