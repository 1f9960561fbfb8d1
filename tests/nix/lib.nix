# A small stand-in for nixpkgs' `lib`, enough to evaluate nixos-modules/*.nix without nixpkgs
# (which these machines cannot reach). It mirrors the parts of the module system the zk0
# modules use: option declarations with types and defaults, config definitions with
# mkIf / mkMerge / mkDefault / mkForce pushed down the way lib.modules does it (so
# `config = mkIf cfg.enable { ... }` does not recurse), priorities, type merging, and an
# error for definitions of undeclared options. It is a contract-test tool, not a
# reimplementation: passing here shows the modules produce the intended unit, not that
# NixOS accepts it.
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    genList
    head
    isAttrs
    isBool
    isFloat
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    match
    replaceStrings
    tail
    toJSON
    ;

  showPath = path: concatStringsSep "." path;

  # --- properties -------------------------------------------------------------------------
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkOptionDefault = mkOverride 1500;
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;
  defaultPriority = 100;

  typeOf = v: if isAttrs v then v._type or null else null;

  # Push properties below an attribute set without forcing mkIf conditions (lib.modules'
  # pushDownProperties): `mkIf c { a = x; }` becomes `{ a = mkIf c x; }`.
  pushDown =
    d:
    let
      t = typeOf d;
    in
    if t == "merge" then
      concatMap pushDown d.contents
    else if t == "if" then
      map (mapAttrs (_: mkIf d.condition)) (pushDown d.content)
    else if t == "override" then
      map (mapAttrs (_: mkOverride d.priority)) (pushDown d.content)
    else
      [ d ];

  # At an option: resolve properties into { value, priority } definitions (lib.modules'
  # dischargeProperties), keeping only the highest-priority ones (filterOverrides).
  discharge =
    priority: d:
    let
      t = typeOf d;
    in
    if t == "merge" then
      concatMap (discharge priority) d.contents
    else if t == "if" then
      (
        if !isBool d.condition then
          throw "mkIf called with a non-Boolean condition"
        else if d.condition then
          discharge priority d.content
        else
          [ ]
      )
    else if t == "override" then
      discharge d.priority d.content
    else
      [
        {
          value = d;
          inherit priority;
        }
      ];

  filterOverrides =
    defs:
    let
      best = foldl' (p: d: if d.priority < p then d.priority else p) 9999 defs;
    in
    map (d: d.value) (filter (d: d.priority == best) defs);

  resolve = defs: filterOverrides (concatMap (discharge defaultPriority) defs);

  # --- types ------------------------------------------------------------------------------
  mkOptionType =
    {
      name,
      description ? name,
      check ? (_: true),
      merge ? mergeEqual,
      nestedTypes ? { },
    }:
    {
      _type = "option-type";
      inherit
        name
        description
        check
        merge
        nestedTypes
        ;
    };

  mergeEqual =
    path: values:
    if all (v: v == head values) values then
      head values
    else
      throw "The option `${showPath path}' has conflicting definition values: ${showValue values}";

  # Definitions below this point are already discharged values.
  checked =
    type: path: v:
    if type.check v then
      v
    else
      throw "A definition for option `${showPath path}' is not of type `${type.description}'. Definition value: ${showValue v}";

  isDerivation = v: isAttrs v && (v.type or null) == "derivation";

  # For error messages; unlike toJSON it never copies a path into the store.
  showValue =
    v:
    if isPath v then
      toString v
    else if isString v || isInt v || isBool v || isFloat v || v == null then
      toJSON v
    else if isList v then
      "[ ${concatStringsSep " " (map showValue v)} ]"
    else
      "<attribute set>";

  # Deep merge for freeform values (systemd unit attribute sets in the stubs): attribute sets
  # merge per name with properties discharged, lists concatenate, scalars must agree.
  mergeDeep =
    path: values:
    if values == [ ] then
      throw "The option `${showPath path}' has no definition"
    else if all (v: isAttrs v && !isDerivation v) values then
      let
        names = attrNames (foldl' (acc: v: acc // v) { } values);
        defsFor = n: resolve (concatMap (v: if v ? ${n} then [ v.${n} ] else [ ]) values);
        kept = filter (n: defsFor n != [ ]) names;
      in
      listToAttrs (
        map (n: {
          name = n;
          value = mergeDeep (path ++ [ n ]) (defsFor n);
        }) kept
      )
    else if all isList values then
      concatMap (v: concatLists (map (x: resolve [ x ]) v)) values
    else
      mergeEqual path values;

  types = rec {
    anything = mkOptionType {
      name = "anything";
      merge = mergeDeep;
    };
    raw = mkOptionType {
      name = "raw";
      merge = path: values: head values;
    };
    bool = mkOptionType {
      name = "bool";
      description = "boolean";
      check = isBool;
    };
    str = mkOptionType {
      name = "str";
      description = "string";
      check = isString;
    };
    nonEmptyStr = mkOptionType {
      name = "nonEmptyStr";
      description = "non-empty string";
      check = v: isString v && match "[[:space:]]*" v == null;
    };
    strMatching =
      pattern:
      mkOptionType {
        name = "strMatching ${toJSON pattern}";
        description = "string matching the pattern ${pattern}";
        check = v: isString v && match pattern v != null;
      };
    int = mkOptionType {
      name = "int";
      description = "signed integer";
      check = isInt;
    };
    float = mkOptionType {
      name = "float";
      description = "floating point number";
      check = isFloat;
    };
    ints = {
      positive = mkOptionType {
        name = "positiveInt";
        description = "positive integer, meaning >0";
        check = v: isInt v && v > 0;
      };
      unsigned = mkOptionType {
        name = "unsignedInt";
        description = "unsigned integer, meaning >=0";
        check = v: isInt v && v >= 0;
      };
      between =
        lo: hi:
        mkOptionType {
          name = "intBetween";
          description = "integer between ${toString lo} and ${toString hi} (both inclusive)";
          check = v: isInt v && v >= lo && v <= hi;
        };
    };
    port = ints.between 0 65535 // {
      name = "port";
      description = "16 bit unsigned integer; between 0 and 65535 (both inclusive)";
    };
    path = mkOptionType {
      name = "path";
      check = v: isPath v || (isString v && match "/.*" v != null) || isDerivation v;
    };
    package = mkOptionType {
      name = "package";
      check = isDerivation;
      merge = path: values: head values;
    };
    enum =
      values:
      mkOptionType {
        name = "enum";
        description = "one of ${concatStringsSep ", " (map toJSON values)}";
        check = v: elem v values;
      };
    nullOr =
      t:
      mkOptionType {
        name = "nullOr";
        description = "null or ${t.description}";
        check = v: v == null || t.check v;
        merge = path: values: if all (v: v == null) values then null else t.merge path values;
        nestedTypes.elemType = t;
      };
    either =
      a: b:
      mkOptionType {
        name = "either";
        description = "${a.description} or ${b.description}";
        check = v: a.check v || b.check v;
        merge = path: values: if all a.check values then a.merge path values else b.merge path values;
      };
    oneOf = ts: foldl' either (head ts) (tail ts);
    listOf =
      t:
      mkOptionType {
        name = "listOf";
        description = "list of ${t.description}";
        check = isList;
        merge =
          path: values:
          let
            items = concatMap (v: concatLists (map (x: resolve [ x ]) v)) values;
          in
          genList (i: checked t (path ++ [ "[${toString i}]" ]) (builtins.elemAt items i)) (length items);
        nestedTypes.elemType = t;
      };
    attrsOf =
      t:
      mkOptionType {
        name = "attrsOf";
        description = "attribute set of ${t.description}";
        check = isAttrs;
        merge =
          path: values:
          let
            pushed = concatMap pushDown values;
            names = attrNames (foldl' (acc: v: acc // v) { } pushed);
            defsFor = n: resolve (concatMap (v: if v ? ${n} then [ v.${n} ] else [ ]) pushed);
            kept = filter (n: defsFor n != [ ]) names;
          in
          listToAttrs (
            map (n: {
              name = n;
              value = mergeValues t (path ++ [ n ]) (defsFor n);
            }) kept
          );
        nestedTypes.elemType = t;
      };
    lazyAttrsOf = attrsOf;
    attrs = mkOptionType {
      name = "attrs";
      description = "attribute set";
      check = isAttrs;
      merge = path: values: foldl' (a: b: a // b) { } values;
    };
  };

  mergeValues =
    type: path: values:
    let
      checkedValues = map (checked type path) values;
    in
    type.merge path checkedValues;

  # --- options ----------------------------------------------------------------------------
  mkOption = attrs: attrs // { _type = "option"; };
  isOption = v: isAttrs v && (v._type or null) == "option";

  mkEnableOption =
    name:
    mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
    };

  # nixpkgs' mkPackageOption: the default is pkgs.<name>, shown as a literal expression.
  mkPackageOption =
    pkgs: name:
    {
      default ? [ name ],
      example ? null,
      extraDescription ? "",
      ...
    }:
    let
      attrPath = if isList default then default else [ default ];
      pkg = foldl' (set: n: set.${n}) pkgs attrPath;
    in
    mkOption (
      {
        type = types.package;
        description = "The ${concatStringsSep "." attrPath} package to use.${extraDescription}";
        default = pkg;
        defaultText = literalExpression "pkgs.${concatStringsSep "." attrPath}";
      }
      // (if example == null then { } else { example = literalExpression "pkgs.${example}"; })
    );

  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };
  literalMD = text: {
    _type = "literalMD";
    inherit text;
  };
  mdDoc = s: s;

  # Merge option declarations from several modules into one tree.
  mergeDecls =
    decls:
    let
      names = attrNames (foldl' (a: b: a // b) { } decls);
      declsFor = n: concatMap (d: if d ? ${n} then [ d.${n} ] else [ ]) decls;
    in
    listToAttrs (
      map (
        n:
        let
          ds = declsFor n;
        in
        {
          name = n;
          value =
            if any isOption ds then
              (if length ds == 1 then head ds else throw "The option `${n}' is declared more than once.")
            else
              mergeDecls ds;
        }
      ) names
    );

  # Values of an option tree from a list of config definitions.
  evalTree =
    path: opts: defs:
    if isOption opts then
      let
        values = resolve defs;
        type = opts.type or types.anything;
      in
      if values != [ ] then
        mergeValues type path values
      else if opts ? default then
        opts.default
      else
        throw "The option `${showPath path}' is used but not defined."
    else
      let
        pushed = concatMap pushDown defs;
        defined = attrNames (foldl' (a: b: a // b) { } pushed);
        undeclared = filter (n: !(opts ? ${n})) defined;
        defsFor = n: concatMap (d: if d ? ${n} then [ d.${n} ] else [ ]) pushed;
      in
      if undeclared != [ ] then
        throw "The option `${showPath (path ++ [ (head undeclared) ])}' does not exist."
      else
        mapAttrs (n: sub: evalTree (path ++ [ n ]) sub (defsFor n)) opts;

  evalModules =
    {
      modules,
      specialArgs ? { },
    }:
    let
      args =
        specialArgs
        // {
          inherit lib config options;
        };
      load = m: if isPath m || isString m then import m else m;
      apply = m: if isFunction m then m args else m;
      normalise =
        m:
        let
          v = apply (load m);
        in
        {
          imports = v.imports or [ ];
          options = v.options or { };
          config = if v ? options || v ? config then v.config or { } else removeAttrs v [ "imports" ];
        };
      collect = ms: concatMap (m: let n = normalise m; in [ n ] ++ collect n.imports) ms;
      all' = collect modules;
      options = mergeDecls (map (m: m.options) all');
      config = evalTree [ ] options (map (m: m.config) all');
    in
    {
      inherit config options;
    };

  # --- small helpers the modules use --------------------------------------------------------
  optional = c: x: if c then [ x ] else [ ];
  optionals = c: xs: if c then xs else [ ];
  optionalAttrs = c: a: if c then a else { };
  optionalString = c: s: if c then s else "";
  mapAttrsToList = f: a: map (n: f n a.${n}) (attrNames a);
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
  getExe' = pkg: exe: "${pkg}/bin/${exe}";
  getExe = pkg: "${pkg}/bin/${pkg.meta.mainProgram or pkg.pname or pkg.name}";
  escapeShellArg =
    arg:
    let
      s = toString arg;
    in
    if match "[[:alnum:],._+:@%/-]+" s == null then "'${replaceStrings [ "'" ] [ "'\\''" ] s}'" else s;
  escapeShellArgs = xs: concatStringsSep " " (map escapeShellArg xs);

  lib = {
    inherit
      mkIf
      mkMerge
      mkOverride
      mkOptionDefault
      mkDefault
      mkForce
      mkOption
      mkOptionType
      mkEnableOption
      mkPackageOption
      literalExpression
      literalMD
      mdDoc
      types
      evalModules
      isOption
      optional
      optionals
      optionalAttrs
      optionalString
      mapAttrsToList
      hasPrefix
      concatMapStringsSep
      getExe
      getExe'
      escapeShellArg
      escapeShellArgs
      isDerivation
      ;
    inherit (builtins)
      attrNames
      concatLists
      concatMap
      concatStringsSep
      elem
      filter
      isString
      mapAttrs
      toJSON
      ;
    maintainers = { };
  };
in
lib
