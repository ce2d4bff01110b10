//! `policy:` YAML → [`Policy`]: shape checks, then every semantic check, all
//! errors reported at once with their key paths.
//!
//! # Errors (the file is rejected)
//! - unknown keys anywhere, values of the wrong type, unknown enum values;
//! - unknown statement kinds, detectors, malformed table or column names,
//!   invalid regexes, duplicate detector or rule names;
//! - a mask rule with neither `columns` nor `detect`, or with both (a rule
//!   does one thing: write two rules);
//! - `predicates: deny|hold` on a detector rule;
//! - `keep_last` without `strategy: partial`; `strategy: hash` without a key,
//!   or with both `hash_key_env` and `hash_key_file`, or a key that cannot be read;
//! - rules that can never match: an empty `statements`, `tables`, `columns`,
//!   `detect` or `when` list, `without_where` with kinds other than
//!   update/delete, `statements: [unparsed]` (that is `policy.unparsed`'s job),
//!   `min_approvals: 0`, a zero `timeout`;
//! - two mask rules for the same column (or detector) under the same `when`
//!   with different strategies: which one applies would be a guess.
//!
//! # Warnings (the file is accepted)
//! - a rule fully shadowed by an earlier rule of the same class, or a hold rule
//!   fully shadowed by a deny rule: it can never decide anything, but the
//!   effective policy is the stricter one, so it still fails closed;
//! - `server_code: allow` or `privileged: allow` in a policy with rules
//!   (fail open), and `max_rows`
//!   on a rule none of whose statement kinds report a row count;
//! - the same column or detector masked twice identically;
//! - `unparsed: allow` (fail open), unused custom detectors, a short hash key,
//!   and table-scoped `drop`/`truncate` rules (CASCADE reaches tables unnamed).

use std::{cell::RefCell, collections::HashMap};

use regex::Regex;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::{
    COUNTABLE, DESTRUCTIVE_DDL, DenyRule, Detector, GuardMatcher, HashKey, HoldRule, MaskRule,
    Policy, UnparsedAction,
    names::{ColumnRef, TablePattern, TableRef, parse_dotted},
    spec::{
        DenyRuleSpec, DetectorSpec, HoldRuleSpec, MaskRuleSpec, PolicySpec, PredicateAction,
        PrivilegedAction, ServerCodeAction, WhenSpec,
    },
    when::{Glob, Selector},
};
use hoop_config::{
    KeyPath, SourceMap,
    checked::{NestedCheck, deserialize_checked, enum_variants},
    diagnostic::{Diagnostic, Diagnostics, did_you_mean},
};
use hoop_core::{HoldRequirement, StatementKind};
use hoop_mask::{BuiltinDetector, Strategy};

/// Compiles a `policy:` value found at `path`, recording every finding in `diags`.
/// Returns `None` when any error was found (in this section).
pub fn compile_into(value: &Value, path: &KeyPath, diags: &mut Diagnostics<'_>) -> Option<Policy> {
    let errors_before = diags.error_count();
    let detectors = RefCell::new(Vec::new());
    let masks = RefCell::new(Vec::new());
    let denies = RefCell::new(Vec::new());
    let holds = RefCell::new(Vec::new());
    let check_detectors = |v: &Value, p: &KeyPath, d: &mut Diagnostics<'_>| {
        *detectors.borrow_mut() = list::<DetectorSpec>(v, p, d);
    };
    let check_mask = |v: &Value, p: &KeyPath, d: &mut Diagnostics<'_>| {
        *masks.borrow_mut() = list::<MaskRuleSpec>(v, p, d);
    };
    let check_deny = |v: &Value, p: &KeyPath, d: &mut Diagnostics<'_>| {
        *denies.borrow_mut() = list::<DenyRuleSpec>(v, p, d);
    };
    let check_hold = |v: &Value, p: &KeyPath, d: &mut Diagnostics<'_>| {
        *holds.borrow_mut() = list::<HoldRuleSpec>(v, p, d);
    };
    let spec = deserialize_checked::<PolicySpec>(
        value,
        path,
        diags,
        &[
            ("detectors", &check_detectors),
            ("mask", &check_mask),
            ("deny", &check_deny),
            ("hold", &check_hold),
        ],
    );
    // Keep checking the rules that did parse even when some key did not.
    let spec = spec.unwrap_or_default();
    let mut compiler = Compiler {
        diags,
        path: path.clone(),
    };
    let custom = compiler.detectors(&detectors.into_inner());
    let (mask, used) = compiler.masks(&masks.into_inner(), &custom);
    for (name, (detector_path, _)) in &custom {
        if !used.contains(name) {
            compiler.diags.warning(
                detector_path,
                format!("detector `{name}` is not used by any mask rule"),
                None,
            );
        }
    }
    let hash_key = compiler.hash_key(
        &spec,
        mask.iter().any(|m| m.rule.strategy == Strategy::Hash),
    );
    let deny = compiler.denies(&denies.into_inner());
    let hold = compiler.holds(&holds.into_inner());
    compiler.shadowing(&deny, &hold);
    let has_rules = !mask.is_empty() || !deny.is_empty() || !hold.is_empty();
    let server_code = spec.server_code.unwrap_or(if has_rules {
        ServerCodeAction::Deny
    } else {
        ServerCodeAction::Allow
    });
    if spec.server_code == Some(ServerCodeAction::Allow) && has_rules {
        compiler.diags.warning(
            &path.key("server_code"),
            "code that runs inside the server (DO blocks, routines, triggers, rules) can drop protected tables and return masked values, out of every rule's sight (fail open)",
            Some("use `deny` (the default when the policy has rules) or `hold`".to_owned()),
        );
    }
    let privileged = spec.privileged.unwrap_or(if has_rules {
        PrivilegedAction::Deny
    } else {
        PrivilegedAction::Allow
    });
    if spec.privileged == Some(PrivilegedAction::Allow) && has_rules {
        compiler.diags.warning(
            &path.key("privileged"),
            "server files, raw pages, planner statistics, COPY … PROGRAM and links to other databases read and move data where masking never looks (fail open)",
            Some("use `deny` (the default when the policy has rules) or `hold`".to_owned()),
        );
    }
    if spec.unparsed == UnparsedAction::Allow {
        compiler.diags.warning(
            &path.key("unparsed"),
            "statements hoop cannot parse will reach the database unjudged (fail open)",
            Some("use `deny` (the default) or `hold`".to_owned()),
        );
    }
    if compiler.diags.error_count() > errors_before {
        return None;
    }
    Some(Policy {
        unparsed: spec.unparsed,
        server_code,
        privileged,
        binary_unmaskable: spec.binary_unmaskable,
        hash_key,
        mask: mask.into_iter().map(|m| m.rule).collect(),
        deny: deny.into_iter().map(|d| d.rule).collect(),
        hold: hold.into_iter().map(|h| h.rule).collect(),
    })
}

/// Compiles a `policy:` value on its own (the root of `source`'s document is
/// the whole config file, so paths start at `policy`).
pub fn compile(
    spec: &Value,
    source: &SourceMap,
) -> Result<(Policy, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Diagnostics::new(source);
    let policy = compile_into(spec, &KeyPath::root().key("policy"), &mut diags);
    let found = diags.into_vec();
    match policy {
        Some(policy) => Ok((policy, found)),
        None => Err(found),
    }
}

/// Compiles the `when:` of the item at `owner` (its value is
/// `owner.when`), recording every finding in `diags`: the same selectors,
/// checks and messages as a policy rule's `when:`, for other sections whose
/// items select sessions (`credentials.entries[]`). `None` when the `when:`
/// has errors; an absent `when:` (null) selects every session.
pub fn compile_when(
    value: &Value,
    owner: &KeyPath,
    diags: &mut Diagnostics<'_>,
) -> Option<Selector> {
    if value.is_null() {
        return Some(Selector::default());
    }
    let errors_before = diags.error_count();
    let spec = deserialize_checked::<WhenSpec>(value, &owner.key("when"), diags, &[])?;
    let mut compiler = Compiler {
        diags,
        path: owner.clone(),
    };
    let selector = compiler.selector(owner, Some(&spec));
    (compiler.diags.error_count() == errors_before).then_some(selector)
}

/// The items of a list that parsed, each with its path; every bad item is reported.
fn list<T: DeserializeOwned>(
    value: &Value,
    path: &KeyPath,
    diags: &mut Diagnostics<'_>,
) -> Vec<(KeyPath, T)> {
    fn when(v: &Value, p: &KeyPath, d: &mut Diagnostics<'_>) {
        let _ = deserialize_checked::<WhenSpec>(v, p, d, &[]);
    }
    let when: NestedCheck<'_> = &when;
    match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_path = path.index(i);
                deserialize_checked::<T>(item, &item_path, diags, &[("when", when)])
                    .map(|t| (item_path, t))
            })
            .collect(),
        _ => {
            diags.error(
                path,
                "expected a list",
                Some("write one rule per `- ` item".to_owned()),
            );
            Vec::new()
        }
    }
}

struct Compiled<R> {
    rule: R,
    path: KeyPath,
    /// The `when:` as written, to compare rules for conflicts.
    when: WhenKey,
}

/// A `when:` in comparable form: sorted lists, `None` for an absent list.
type WhenKey = [Option<Vec<String>>; 8];

fn when_key(when: Option<&WhenSpec>) -> WhenKey {
    let sorted = |l: &Option<Vec<String>>| {
        l.clone().map(|mut l| {
            l.sort();
            l
        })
    };
    when.map_or_else(Default::default, |w| {
        [
            sorted(&w.database),
            sorted(&w.user),
            sorted(&w.application_name),
            sorted(&w.workload),
            sorted(&w.namespace),
            sorted(&w.service_account),
            sorted(&w.pod),
            w.labels.as_ref().map(|labels| {
                // BTreeMap: keys in order; each key's patterns sorted.
                labels
                    .iter()
                    .map(|(k, v)| {
                        let mut patterns = v.patterns().to_vec();
                        patterns.sort();
                        format!("{k}={}", patterns.join("|"))
                    })
                    .collect()
            }),
        ]
    })
}

fn is_unconditional(key: &WhenKey) -> bool {
    key.iter().all(Option::is_none)
}

struct Compiler<'d, 's> {
    diags: &'d mut Diagnostics<'s>,
    path: KeyPath,
}

type CustomDetectors = HashMap<String, (KeyPath, Regex)>;

impl Compiler<'_, '_> {
    fn detectors(&mut self, specs: &[(KeyPath, DetectorSpec)]) -> CustomDetectors {
        let builtin = enum_variants::<BuiltinDetector>();
        let mut custom = CustomDetectors::new();
        for (path, spec) in specs {
            let name_path = path.key("name");
            let valid_name = !spec.name.is_empty()
                && spec
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                self.diags.error(
                    &name_path,
                    format!("invalid detector name `{}`", spec.name),
                    Some("use lower-case letters, digits and `_`".to_owned()),
                );
                continue;
            }
            if builtin.contains(&spec.name.as_str()) {
                self.diags.error(
                    &name_path,
                    format!("`{}` is a built-in detector", spec.name),
                    Some("pick another name".to_owned()),
                );
                continue;
            }
            if custom.contains_key(&spec.name) {
                self.diags.error(
                    &name_path,
                    format!("detector `{}` is defined twice", spec.name),
                    None,
                );
                continue;
            }
            match Regex::new(&spec.regex) {
                Ok(regex) => {
                    custom.insert(spec.name.clone(), (path.clone(), regex));
                }
                Err(e) => {
                    let detail = e.to_string();
                    let last = detail
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or(&detail)
                        .trim();
                    self.diags.error(
                        &path.key("regex"),
                        format!("invalid regex: {last}"),
                        Some(
                            "Rust `regex` syntax; quote the pattern with single quotes in YAML"
                                .to_owned(),
                        ),
                    );
                }
            }
        }
        custom
    }

    fn selector(&mut self, path: &KeyPath, when: Option<&WhenSpec>) -> Selector {
        let Some(when) = when else {
            return Selector::default();
        };
        let mut list = |key: &str, values: &Option<Vec<String>>| -> Option<Vec<Glob>> {
            let values = values.as_ref()?;
            let list_path = path.key("when").key(key);
            if values.is_empty() {
                self.diags.error(
                    &list_path,
                    "an empty list matches no session, so the rule could never apply",
                    Some(format!("remove `{key}` to match every session")),
                );
            }
            for (i, value) in values.iter().enumerate() {
                if value.is_empty() {
                    self.diags.error(
                        &list_path.index(i),
                        "an empty pattern matches nothing",
                        Some("use `*` to match anything".to_owned()),
                    );
                }
            }
            Some(values.iter().map(|v| Glob::new(v)).collect())
        };
        Selector {
            database: list("database", &when.database),
            user: list("user", &when.user),
            application_name: list("application_name", &when.application_name),
            workload: list("workload", &when.workload),
            namespace: list("namespace", &when.namespace),
            service_account: list("service_account", &when.service_account),
            pod: list("pod", &when.pod),
            labels: when.labels.as_ref().map(|labels| {
                let labels_path = path.key("when").key("labels");
                if labels.is_empty() {
                    self.diags.error(
                        &labels_path,
                        "an empty map matches every pod, which is surely not what was meant",
                        Some("name at least one label, or remove `labels`".to_owned()),
                    );
                }
                labels
                    .iter()
                    .map(|(key, patterns)| {
                        let key_path = labels_path.key(key);
                        if patterns.patterns().is_empty() {
                            self.diags.error(
                                &key_path,
                                "an empty list matches no pod, so the rule could never apply",
                                Some(format!("remove `{key}` to match any value")),
                            );
                        }
                        (
                            key.clone(),
                            patterns.patterns().iter().map(|p| Glob::new(p)).collect(),
                        )
                    })
                    .collect()
            }),
        }
    }

    fn rule_name(
        &mut self,
        path: &KeyPath,
        class: &str,
        index: usize,
        name: Option<&String>,
    ) -> String {
        match name {
            Some(name) if name.trim().is_empty() => {
                self.diags
                    .error(&path.key("name"), "a rule name cannot be empty", None);
                String::new()
            }
            Some(name) => name.clone(),
            None => format!("{class}[{index}]"),
        }
    }

    fn masks(
        &mut self,
        specs: &[(KeyPath, MaskRuleSpec)],
        custom: &CustomDetectors,
    ) -> (Vec<Compiled<MaskRule>>, Vec<String>) {
        let builtin = enum_variants::<BuiltinDetector>();
        let mut used = Vec::new();
        let mut rules: Vec<Compiled<MaskRule>> = Vec::new();
        let mut names: HashMap<String, KeyPath> = HashMap::new();
        // (target, when) → (rule index, strategy, keep_last, path of the target)
        let mut seen: HashMap<(String, WhenKey), (usize, Strategy, Option<u32>)> = HashMap::new();
        for (path, spec) in specs {
            let index = path_index(path);
            let name = self.rule_name(path, "mask", index, spec.name.as_ref());
            if let Some(first) = names.insert(name.clone(), path.clone()) {
                self.diags.error(
                    &path.key("name"),
                    format!("mask rule name `{name}` is already used by {first}"),
                    None,
                );
            }
            let when = self.selector(path, spec.when.as_ref());
            let key = when_key(spec.when.as_ref());
            match (&spec.columns, &spec.detect) {
                (None, None) => self.diags.error(
                    path,
                    "a mask rule needs `columns` or `detect`",
                    Some("add `columns: [table.column]` or `detect: [email]`".to_owned()),
                ),
                (Some(_), Some(_)) => self.diags.error(
                    path,
                    "a mask rule takes `columns` or `detect`, not both",
                    Some("split it into two rules".to_owned()),
                ),
                _ => {}
            }
            let keep_last = match (spec.strategy, spec.keep_last) {
                (Strategy::Partial, keep) => Some(keep.unwrap_or(4)),
                (_, Some(_)) => {
                    self.diags.error(
                        &path.key("keep_last"),
                        "`keep_last` only applies to `strategy: partial`",
                        Some("remove it or set `strategy: partial`".to_owned()),
                    );
                    None
                }
                (_, None) => None,
            };
            let mut columns = Vec::new();
            let mut targets = Vec::new();
            if let Some(list) = &spec.columns {
                let list_path = path.key("columns");
                if list.is_empty() {
                    self.diags
                        .error(&list_path, "an empty `columns` list masks nothing", None);
                }
                for (i, text) in list.iter().enumerate() {
                    match parse_dotted(text) {
                        Ok(mut parts) if parts.len() <= 3 => {
                            let column = parts.pop().unwrap_or_default();
                            let table = parts.pop();
                            let schema = parts.pop();
                            let column = ColumnRef {
                                schema,
                                table,
                                column,
                            };
                            targets.push((format!("column {column}"), list_path.index(i)));
                            columns.push(column);
                        }
                        Ok(_) => self.diags.error(
                            &list_path.index(i),
                            format!("`{text}` has too many parts"),
                            Some(
                                "use `column`, `table.column` or `schema.table.column`".to_owned(),
                            ),
                        ),
                        Err(e) => self.diags.error(
                            &list_path.index(i),
                            format!("invalid column `{text}`: {e}"),
                            None,
                        ),
                    }
                }
            }
            let mut detectors = Vec::new();
            if let Some(list) = &spec.detect {
                let list_path = path.key("detect");
                if list.is_empty() {
                    self.diags
                        .error(&list_path, "an empty `detect` list masks nothing", None);
                }
                for (i, name) in list.iter().enumerate() {
                    if let Ok(builtin) =
                        serde_yaml_ng::from_value::<BuiltinDetector>(Value::String(name.clone()))
                    {
                        detectors.push(Detector::Builtin(builtin));
                    } else if let Some((_, regex)) = custom.get(name) {
                        used.push(name.clone());
                        detectors.push(Detector::Custom {
                            name: name.clone(),
                            regex: regex.clone(),
                        });
                    } else {
                        let candidates = builtin
                            .iter()
                            .copied()
                            .chain(custom.keys().map(String::as_str));
                        let hint = did_you_mean(name, candidates).or_else(|| {
                            Some(
                                "define it under `policy.detectors` or use a built-in detector"
                                    .to_owned(),
                            )
                        });
                        self.diags.error(
                            &list_path.index(i),
                            format!("unknown detector `{name}`"),
                            hint,
                        );
                        continue;
                    }
                    targets.push((format!("detector {name}"), list_path.index(i)));
                }
            }
            for (target, target_path) in targets {
                match seen.get(&(target.clone(), key.clone())) {
                    Some(&(first, strategy, keep))
                        if strategy != spec.strategy || keep != keep_last =>
                    {
                        self.diags.error(
                            &target_path,
                            format!("{target} is already masked by `{}` with a different strategy under the same `when`", rules[first].rule.name),
                            Some("mask it in one rule, or give the rules different `when` selectors".to_owned()),
                        );
                    }
                    Some(&(first, ..)) => self.diags.warning(
                        &target_path,
                        format!(
                            "{target} is already masked the same way by `{}`",
                            rules[first].rule.name
                        ),
                        None,
                    ),
                    None => {
                        seen.insert(
                            (target, key.clone()),
                            (rules.len(), spec.strategy, keep_last),
                        );
                    }
                }
            }
            let predicates = match (spec.predicates, &spec.detect) {
                (Some(action), Some(_)) if action != PredicateAction::Allow => {
                    self.diags.error(
                        &path.key("predicates"),
                        "`predicates` applies to column rules: a detector finds values in results, not in filters",
                        Some("move it to a rule with `columns`".to_owned()),
                    );
                    PredicateAction::Allow
                }
                (action, _) => action.unwrap_or_default(),
            };
            rules.push(Compiled {
                rule: MaskRule {
                    name,
                    columns,
                    detectors,
                    strategy: spec.strategy,
                    keep_last,
                    predicates,
                    when,
                },
                path: path.clone(),
                when: key,
            });
        }
        (rules, used)
    }

    fn hash_key(&mut self, spec: &PolicySpec, needed: bool) -> Option<HashKey> {
        let env_path = self.path.key("hash_key_env");
        let file_path = self.path.key("hash_key_file");
        let bytes = match (&spec.hash_key_env, &spec.hash_key_file) {
            (Some(_), Some(_)) => {
                self.diags.error(
                    &file_path,
                    "set `hash_key_env` or `hash_key_file`, not both",
                    None,
                );
                return None;
            }
            (None, None) => {
                if needed {
                    self.diags.error(
                        &self.path.clone(),
                        "`strategy: hash` needs a key",
                        Some("set `hash_key_env: VAR` or `hash_key_file: PATH`".to_owned()),
                    );
                }
                return None;
            }
            (Some(var), None) => match std::env::var_os(var) {
                Some(value) if !value.is_empty() => value.into_encoded_bytes(),
                _ => {
                    self.diags.error(
                        &env_path,
                        format!("environment variable `{var}` is not set or empty"),
                        Some("export the key before starting hoop".to_owned()),
                    );
                    return None;
                }
            },
            (None, Some(file)) => match std::fs::read(file) {
                Ok(mut bytes) => {
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    if bytes.is_empty() {
                        self.diags.error(
                            &file_path,
                            format!("key file `{}` is empty", file.display()),
                            None,
                        );
                        return None;
                    }
                    bytes
                }
                Err(e) => {
                    self.diags.error(
                        &file_path,
                        format!("cannot read key file `{}`: {e}", file.display()),
                        None,
                    );
                    return None;
                }
            },
        };
        if bytes.len() < 16 {
            let at = if spec.hash_key_env.is_some() {
                env_path
            } else {
                file_path
            };
            self.diags.warning(
                &at,
                "the hash key is shorter than 16 bytes; tokens may be guessable",
                Some("use at least 32 random bytes".to_owned()),
            );
        }
        Some(HashKey(bytes))
    }

    #[allow(clippy::too_many_arguments)]
    fn matcher(
        &mut self,
        path: &KeyPath,
        statements: &[String],
        tables: Option<&Vec<String>>,
        without_where: bool,
        max_rows: Option<u64>,
        when: Option<&WhenSpec>,
    ) -> GuardMatcher {
        let kind_names = enum_variants::<StatementKind>();
        let variants: Vec<&str> = kind_names
            .iter()
            .copied()
            .chain(std::iter::once(DESTRUCTIVE_DDL))
            .collect();
        let list_path = path.key("statements");
        if statements.is_empty() {
            self.diags.error(
                &list_path,
                "an empty `statements` list matches nothing",
                Some("list statement kinds, e.g. [delete, update]".to_owned()),
            );
        }
        let mut kinds = Vec::new();
        let mut destructive_ddl = false;
        for (i, name) in statements.iter().enumerate() {
            if name == DESTRUCTIVE_DDL {
                if without_where {
                    self.diags.error(
                        &list_path.index(i),
                        "`without_where` only matches update and delete, so `destructive_ddl` here can never match",
                        Some("move it to a rule without `without_where`".to_owned()),
                    );
                }
                destructive_ddl = true;
                continue;
            }
            match serde_yaml_ng::from_value::<StatementKind>(Value::String(name.clone())) {
                Ok(StatementKind::Unparsed) => self.diags.error(
                    &list_path.index(i),
                    "`unparsed` is not matched by rules",
                    Some("set `policy.unparsed: deny | hold | allow`".to_owned()),
                ),
                Ok(kind) => kinds.push(kind),
                Err(_) => {
                    let hint = did_you_mean(name, variants.iter().copied())
                        .or_else(|| Some(format!("one of: {}", variants.join(", "))));
                    self.diags.error(
                        &list_path.index(i),
                        format!("unknown statement kind `{name}`"),
                        hint,
                    );
                }
            }
        }
        if without_where {
            for (i, kind) in kinds.iter().enumerate() {
                if !matches!(kind, StatementKind::Update | StatementKind::Delete) {
                    self.diags.error(
                        &list_path.index(i),
                        format!("`without_where` only matches update and delete, so `{}` here can never match", statements[i]),
                        Some("move other kinds to a rule without `without_where`".to_owned()),
                    );
                }
            }
        }
        let tables = tables.map(|list| {
            let tables_path = path.key("tables");
            if list.is_empty() {
                self.diags.error(
                    &tables_path,
                    "an empty `tables` list matches nothing",
                    Some("remove `tables` to match every table".to_owned()),
                );
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| match parse_dotted(text) {
                    Ok(parts) if (1..=2).contains(&parts.len()) => {
                        TableRef::from_parts(parts).map(TablePattern)
                    }
                    Ok(_) => {
                        self.diags.error(
                            &tables_path.index(i),
                            format!("`{text}` has too many parts"),
                            Some("use `table` or `schema.table`".to_owned()),
                        );
                        None
                    }
                    Err(e) => {
                        self.diags.error(
                            &tables_path.index(i),
                            format!("invalid table `{text}`: {e}"),
                            None,
                        );
                        None
                    }
                })
                .collect()
        });
        if let Some(limit) = max_rows
            && !kinds.iter().any(|k| COUNTABLE.contains(k))
        {
            self.diags.warning(
                &path.key("max_rows"),
                format!(
                    "`max_rows: {limit}` cannot be checked for {}: the server reports no row count for them, so the rule applies to every statement it matches",
                    if destructive_ddl && kinds.is_empty() {
                        DESTRUCTIVE_DDL.to_owned()
                    } else {
                        statements.join(", ")
                    }
                ),
                Some("max_rows counts the rows of select, insert, update, delete and merge".to_owned()),
            );
        }
        if tables.is_some()
            && (destructive_ddl
                || kinds
                    .iter()
                    .any(|k| matches!(k, StatementKind::Drop | StatementKind::Truncate)))
        {
            self.diags.warning(
                &path.key("tables"),
                "DROP SCHEMA … CASCADE, DROP OWNED and TRUNCATE … CASCADE can reach these tables without naming them",
                Some("add a rule for `drop`/`truncate` without `tables`, or revoke those privileges".to_owned()),
            );
        }
        let when = self.selector(path, when);
        GuardMatcher {
            kinds,
            destructive_ddl,
            tables,
            without_where,
            max_rows,
            when,
        }
    }

    fn check_name(&mut self, names: &mut HashMap<String, KeyPath>, path: &KeyPath, name: &str) {
        if let Some(first) = names.insert(name.to_owned(), path.clone()) {
            self.diags.error(
                &path.key("name"),
                format!("rule name `{name}` is already used by {first}"),
                Some("rule names identify decisions in recordings and holds".to_owned()),
            );
        }
    }

    fn denies(&mut self, specs: &[(KeyPath, DenyRuleSpec)]) -> Vec<Compiled<DenyRule>> {
        let mut names = HashMap::new();
        specs
            .iter()
            .map(|(path, spec)| {
                let name = self.rule_name(path, "deny", path_index(path), spec.name.as_ref());
                self.check_name(&mut names, path, &name);
                let matcher = self.matcher(
                    path,
                    &spec.statements,
                    spec.tables.as_ref(),
                    spec.without_where,
                    spec.max_rows,
                    spec.when.as_ref(),
                );
                let message = spec
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("statement denied by hoop policy rule `{name}`"));
                Compiled {
                    rule: DenyRule {
                        name,
                        message,
                        matcher,
                    },
                    path: path.clone(),
                    when: when_key(spec.when.as_ref()),
                }
            })
            .collect()
    }

    fn holds(&mut self, specs: &[(KeyPath, HoldRuleSpec)]) -> Vec<Compiled<HoldRule>> {
        let mut names = HashMap::new();
        specs
            .iter()
            .map(|(path, spec)| {
                let name = self.rule_name(path, "hold", path_index(path), spec.name.as_ref());
                self.check_name(&mut names, path, &name);
                let matcher = self.matcher(
                    path,
                    &spec.statements,
                    spec.tables.as_ref(),
                    spec.without_where,
                    spec.max_rows,
                    spec.when.as_ref(),
                );
                if spec.min_approvals == 0 {
                    self.diags.error(
                        &path.key("min_approvals"),
                        "`min_approvals: 0` would approve without anyone deciding",
                        Some("use 1 or more, or no hold rule".to_owned()),
                    );
                }
                if spec.timeout.is_zero() {
                    self.diags.error(
                        &path.key("timeout"),
                        "a zero timeout denies every held statement at once",
                        Some("e.g. `timeout: 5m`".to_owned()),
                    );
                }
                for (i, approver) in spec.approvers.iter().enumerate() {
                    if approver.trim().is_empty() {
                        self.diags.error(
                            &path.key("approvers").index(i),
                            "an empty approver group",
                            None,
                        );
                    }
                }
                let message = spec.message.clone().unwrap_or_else(|| {
                    format!("statement held for approval by hoop policy rule `{name}`")
                });
                let requirement = HoldRequirement {
                    rule: name,
                    message,
                    timeout: spec.timeout,
                    approvers: spec.approvers.clone(),
                    min_approvals: spec.min_approvals,
                    max_rows: spec.max_rows,
                };
                Compiled {
                    rule: HoldRule {
                        requirement,
                        matcher,
                    },
                    path: path.clone(),
                    when: when_key(spec.when.as_ref()),
                }
            })
            .collect()
    }

    /// Warns about rules that can never decide anything.
    fn shadowing(&mut self, deny: &[Compiled<DenyRule>], hold: &[Compiled<HoldRule>]) {
        let location = |diags: &Diagnostics<'_>, path: &KeyPath| {
            diags
                .source()
                .locate(path, hoop_config::diagnostic::At::Value)
                .map_or(String::new(), |l| format!(" (line {})", l.line))
        };
        for (i, later) in deny.iter().enumerate() {
            if let Some(earlier) = deny[..i]
                .iter()
                .find(|e| covers(&e.rule.matcher, &e.when, &later.rule.matcher, &later.when))
            {
                let at = location(self.diags, &earlier.path);
                self.diags.warning(&later.path, format!("deny rule `{}` never decides: `{}`{at} already denies everything it matches", later.rule.name, earlier.rule.name), None);
            }
        }
        for (i, later) in hold.iter().enumerate() {
            if let Some(earlier) = deny
                .iter()
                .find(|e| covers(&e.rule.matcher, &e.when, &later.rule.matcher, &later.when))
            {
                let at = location(self.diags, &earlier.path);
                self.diags.warning(
                    &later.path,
                    format!("hold rule `{}` never holds anything: deny rule `{}`{at} denies everything it matches (deny beats hold)", later.rule.requirement.rule, earlier.rule.name),
                    Some("narrow the deny rule, or remove this hold rule".to_owned()),
                );
            } else if let Some(earlier) = hold[..i]
                .iter()
                .find(|e| covers(&e.rule.matcher, &e.when, &later.rule.matcher, &later.when))
            {
                let at = location(self.diags, &earlier.path);
                self.diags.warning(&later.path, format!("hold rule `{}` never decides: `{}`{at} already holds everything it matches", later.rule.requirement.rule, earlier.rule.requirement.rule), None);
            }
        }
    }
}

/// Whether every statement `inner` matches is also matched by `outer`.
fn covers(
    outer: &GuardMatcher,
    outer_when: &WhenKey,
    inner: &GuardMatcher,
    inner_when: &WhenKey,
) -> bool {
    let when = is_unconditional(outer_when) || outer_when == inner_when;
    let kinds = (!inner.kinds.is_empty() || inner.destructive_ddl)
        && inner.kinds.iter().all(|k| {
            outer.kinds.contains(k)
                || (outer.destructive_ddl
                    && matches!(k, StatementKind::Drop | StatementKind::Truncate))
        })
        && (!inner.destructive_ddl || outer.destructive_ddl);
    // A rule with max_rows lets statements under its limit through.
    let rows = outer
        .max_rows
        .is_none_or(|o| inner.max_rows.is_some_and(|i| i >= o));
    let tables = match (&outer.tables, &inner.tables) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(outer), Some(inner)) => inner.iter().all(|i| {
            outer
                .iter()
                .any(|o| o.0.name == i.0.name && (o.0.schema.is_none() || o.0.schema == i.0.schema))
        }),
    };
    let filter = !outer.without_where || inner.without_where;
    when && kinds && tables && filter && rows
}

fn path_index(path: &KeyPath) -> usize {
    match path.segments().last() {
        Some(hoop_config::source::Segment::Index(i)) => *i,
        _ => 0,
    }
}
