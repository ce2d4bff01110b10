//! Whether a `WHERE` (or `MERGE … ON`) lets every row through, for
//! `without_where` rules: a predicate that is true for every row restricts
//! nothing, however it is spelled.
//!
//! # How
//! The predicate is read as a formula in SQL's three-valued logic (true,
//! false, NULL):
//! - values are constants (folded: numbers, strings, booleans, `NULL`,
//!   casts, arithmetic, `||`, and a few immutable built-ins of constants
//!   such as `lower`, `length`, `coalesce`), or **unknowns**: a column, a
//!   parameter, a deterministic expression over them (the same text is the
//!   same value within a row), or a volatile one (`random()`, a routine that
//!   is not built in, a subquery: a fresh unknown at every use);
//! - comparisons between two values are atoms, normalised so that `a < b`
//!   is `NOT (b <= a)` and `a <> b` is `NOT (a = b)`: NULL when either side
//!   is, otherwise true or false;
//! - `AND`, `OR`, `NOT`, `IS [NOT] NULL`, `IS [NOT] TRUE|FALSE|UNKNOWN`,
//!   `IS [NOT] DISTINCT FROM`, `IN (list)`, `BETWEEN`, `LIKE`, `CASE` follow
//!   SQL's rules.
//!
//! The predicate restricts nothing when it is true under **every**
//! assignment of the unknowns (each value NULL or not, each comparison true
//! or false), found by enumeration (or, for very large predicates, by a
//! coarser evaluation that never claims more). So `1 = 1 OR id = 5`,
//! `id > 0 OR id <= 0 OR id IS NULL`, `NOT (id IS NULL AND id IS NOT NULL)`
//! and `(id = 5) IS NOT UNKNOWN OR id IS NULL` are all rows.
//!
//! Two deliberate readings, documented in docs/policy.md:
//! - A comparison of a value with itself (`id = id`, `lower(a) <= lower(a)`)
//!   and a pattern that matches every string (`name LIKE '%'`) count as
//!   true: they exclude only rows where the value is NULL, and nobody
//!   writes them to do that (`IS NOT NULL` says it).
//! - A predicate that mentions no column at all (`WHERE true`,
//!   `WHERE random() < 2`, `WHERE $1`) lets either every row or none
//!   through: it counts as no WHERE.
//!
//! What it cannot see (the `max_rows` dry run is the safety net): facts
//! about the data (`id IS NOT NULL` on a NOT NULL column, `id > 0` when every
//! id is positive), algebra (`id + 0 = id`), and subqueries that select
//! every row (`id IN (SELECT id FROM t)`).

use std::{collections::HashMap, ops::ControlFlow};

use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    Ident, UnaryOperator, Value, VisitMut, VisitorMut, visit_expressions,
};

use crate::{Routine, SqlDialect, Volatility};

/// Largest number of enumerated assignments (the product of every
/// unknown's possibilities).
const MAX_ASSIGNMENTS: u64 = 1 << 14;

/// The relation a single-table `UPDATE`/`DELETE` writes: a qualifier naming
/// it (`o.id` in `DELETE FROM orders o WHERE o.id = id`) is the same column
/// as the bare name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    /// Its folded names: the table's, and its alias.
    pub names: Vec<String>,
}

/// Whether `predicate` restricts rows: `false` when there is none, when it
/// mentions no column, or when it is true for every row (see the module
/// docs).
pub(crate) fn restricts(
    predicate: Option<&Expr>,
    dialect: &dyn SqlDialect,
    target: Option<&Target>,
) -> bool {
    let Some(expr) = predicate else {
        return false;
    };
    if !mentions_column(expr) {
        return false;
    }
    let mut builder = Builder {
        dialect,
        target,
        values: HashMap::new(),
        comparisons: HashMap::new(),
        vars: Vec::new(),
        cmp_operands: Vec::new(),
    };
    let formula = builder.boolean(expr);
    !builder.always_true(&formula)
}

/// Whether an expression mentions any column (in any subquery too).
fn mentions_column(expr: &Expr) -> bool {
    visit_expressions(expr, |e| match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// SQL's truth values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum T3 {
    True,
    False,
    Null,
}

impl T3 {
    fn not(self) -> Self {
        match self {
            T3::True => T3::False,
            T3::False => T3::True,
            T3::Null => T3::Null,
        }
    }

    fn and(self, other: Self) -> Self {
        match (self, other) {
            (T3::False, _) | (_, T3::False) => T3::False,
            (T3::True, T3::True) => T3::True,
            _ => T3::Null,
        }
    }

    fn or(self, other: Self) -> Self {
        match (self, other) {
            (T3::True, _) | (_, T3::True) => T3::True,
            (T3::False, T3::False) => T3::False,
            _ => T3::Null,
        }
    }

    fn bit(self) -> u8 {
        match self {
            T3::True => 1,
            T3::False => 2,
            T3::Null => 4,
        }
    }
}

/// A set of truth values, as bits (`T3::bit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Truths(u8);

impl Truths {
    const ALL: Truths = Truths(7);

    fn one(t: T3) -> Self {
        Truths(t.bit())
    }

    fn each(self) -> impl Iterator<Item = T3> {
        [T3::True, T3::False, T3::Null]
            .into_iter()
            .filter(move |t| self.0 & t.bit() != 0)
    }

    fn map2(self, other: Self, f: impl Fn(T3, T3) -> T3) -> Self {
        let mut out = 0;
        for a in self.each() {
            for b in other.each() {
                out |= f(a, b).bit();
            }
        }
        Truths(out)
    }

    fn map(self, f: impl Fn(T3) -> T3) -> Self {
        Truths(self.each().fold(0, |acc, t| acc | f(t).bit()))
    }
}

/// A constant.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    /// A number, with its literal text when that is exactly how PostgreSQL
    /// would print it (for casts to text).
    Num(f64, Option<String>),
    Str(String),
    Bool(bool),
}

/// A value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Lit(Lit),
    /// An unknown value; equal indexes are the same value within a row.
    Unknown(usize),
}

/// An `IS …` test of a truth value.
#[derive(Debug, Clone, Copy)]
enum IsTest {
    True,
    NotTrue,
    False,
    NotFalse,
    Unknown,
    NotUnknown,
}

/// A predicate as a formula.
#[derive(Debug, Clone)]
enum Formula {
    Const(T3),
    /// Comparison atom `i`: NULL when one of its operands is, otherwise its
    /// variable's value.
    Cmp(usize),
    /// Whether unknown value `i` is NULL.
    IsNull(usize),
    /// A truth value about which nothing is known (its variable ranges over
    /// all three).
    Free(usize),
    Not(Box<Formula>),
    And(Vec<Formula>),
    Or(Vec<Formula>),
    Is(Box<Formula>, IsTest),
    /// `CASE WHEN c THEN r … ELSE e END` (no ELSE: NULL).
    Case(Vec<(Formula, Formula)>, Box<Formula>),
}

/// What an enumerated variable is.
#[derive(Debug, Clone, Copy)]
enum Var {
    /// Whether an unknown value is NULL (2 states).
    Nullness,
    /// A comparison's outcome on non-NULL operands (2 states).
    Outcome,
    /// A free truth value (3 states).
    Free,
}

impl Var {
    fn states(self) -> u64 {
        match self {
            Var::Nullness | Var::Outcome => 2,
            Var::Free => 3,
        }
    }
}

/// A comparison's normal form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CmpKey {
    /// `a = b`, operands ordered.
    Eq(String, String),
    /// `a <= b`.
    Le(String, String),
    /// Any other binary test (`LIKE`, `~`, a boolean value itself…).
    Other(String, String, String),
}

struct Builder<'a> {
    dialect: &'a dyn SqlDialect,
    target: Option<&'a Target>,
    /// Canonical text of a deterministic unknown → its index (its
    /// nullness variable).
    values: HashMap<String, usize>,
    /// Comparison → its index.
    comparisons: HashMap<CmpKey, usize>,
    /// Every variable: unknown values and comparisons and free values share
    /// one numbering.
    vars: Vec<Var>,
    /// For comparison variables: the unknown values whose NULL makes it NULL.
    cmp_operands: Vec<(usize, Vec<usize>)>,
}

impl Builder<'_> {
    fn var(&mut self, var: Var) -> usize {
        self.vars.push(var);
        self.vars.len() - 1
    }

    /// A fresh unknown value (volatile: never equal to another).
    fn fresh(&mut self) -> Val {
        Val::Unknown(self.var(Var::Nullness))
    }

    fn free(&mut self) -> Formula {
        Formula::Free(self.var(Var::Free))
    }

    /// The unknown value for a deterministic expression's canonical text.
    fn named(&mut self, key: String) -> Val {
        if let Some(&i) = self.values.get(&key) {
            return Val::Unknown(i);
        }
        let i = self.var(Var::Nullness);
        self.values.insert(key, i);
        Val::Unknown(i)
    }

    // ---- values ----------------------------------------------------------

    fn value(&mut self, e: &Expr) -> Val {
        match e {
            Expr::Nested(inner) => self.value(inner),
            Expr::Value(v) => match &v.value {
                Value::Null => Val::Null,
                Value::Boolean(b) => Val::Lit(Lit::Bool(*b)),
                Value::Number(n, _) => number(n).map_or_else(|| self.fresh(), Val::Lit),
                Value::SingleQuotedString(s)
                | Value::EscapedStringLiteral(s)
                | Value::NationalStringLiteral(s)
                | Value::UnicodeStringLiteral(s) => Val::Lit(Lit::Str(s.clone())),
                Value::DollarQuotedString(d) => Val::Lit(Lit::Str(d.value.clone())),
                Value::Placeholder(p) => self.named(format!("param {p}")),
                _ => self.fresh(),
            },
            Expr::Identifier(i) => {
                let key = format!("column {}", self.dialect.fold(i));
                self.named(key)
            }
            Expr::CompoundIdentifier(parts) => {
                let key = format!("column {}", self.column_key(parts));
                self.named(key)
            }
            Expr::UnaryOp { op, expr } => match (op, self.value(expr)) {
                (_, Val::Null) => Val::Null,
                (UnaryOperator::Minus, Val::Lit(Lit::Num(n, text))) => {
                    Val::Lit(Lit::Num(-n, text.map(|t| format!("-{t}"))))
                }
                (UnaryOperator::Plus, v @ Val::Lit(Lit::Num(..))) => v,
                _ => self.derived(e),
            },
            Expr::BinaryOp { left, op, right } => {
                let (l, r) = (self.value(left), self.value(right));
                match fold_binary(op, &l, &r) {
                    Some(v) => v,
                    None => self.derived(e),
                }
            }
            Expr::Cast {
                kind: CastKind::Cast | CastKind::DoubleColon,
                expr,
                data_type,
                ..
            } => match self.value(expr) {
                Val::Null => Val::Null,
                Val::Lit(lit) => cast(lit, data_type).map_or_else(|| self.derived(e), Val::Lit),
                Val::Unknown(_) => self.derived(e),
            },
            Expr::Function(f) => {
                let routine = self.dialect.routine(&f.name);
                let volatile = matches!(
                    routine,
                    Routine::NotBuiltIn | Routine::BuiltIn(Volatility::Volatile)
                ) || f.over.is_some();
                if volatile {
                    return self.fresh();
                }
                let args: Option<Vec<Val>> = match &f.args {
                    FunctionArguments::List(list) if list.clauses.is_empty() => list
                        .args
                        .iter()
                        .map(|a| match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(self.value(e)),
                            _ => None,
                        })
                        .collect(),
                    FunctionArguments::None => Some(Vec::new()),
                    _ => None,
                };
                let name = f
                    .name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| self.dialect.fold(i))
                    .unwrap_or_default();
                match args.and_then(|args| fold_function(&name, &args)) {
                    Some(v) => v,
                    None => self.derived(e),
                }
            }
            _ => self.derived(e),
        }
    }

    /// A column's key: a qualifier naming the single target table is dropped.
    fn column_key(&self, parts: &[Ident]) -> String {
        let folded: Vec<String> = parts.iter().map(|p| self.dialect.fold(p)).collect();
        if let ([qualifier, column], Some(target)) = (folded.as_slice(), self.target)
            && target.names.iter().any(|n| n == qualifier)
        {
            return column.clone();
        }
        folded.join(".")
    }

    /// An expression that is not a constant: the same unknown wherever the
    /// same deterministic text appears, a fresh one when it may differ.
    fn derived(&mut self, e: &Expr) -> Val {
        if !self.deterministic(e) {
            return self.fresh();
        }
        let mut canonical = e.clone();
        let mut folder = Canonical { builder: self };
        let _ = canonical.visit(&mut folder);
        let key = format!("expr {canonical}");
        self.named(key)
    }

    /// No volatile routine, no subquery, no window: the same within a row.
    fn deterministic(&self, e: &Expr) -> bool {
        visit_expressions(e, |e| match e {
            Expr::Function(f)
                if f.over.is_some()
                    || matches!(
                        self.dialect.routine(&f.name),
                        Routine::NotBuiltIn | Routine::BuiltIn(Volatility::Volatile)
                    ) =>
            {
                ControlFlow::Break(())
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })
        .is_continue()
    }

    // ---- truth -----------------------------------------------------------

    fn boolean(&mut self, e: &Expr) -> Formula {
        match e {
            Expr::Nested(inner) => self.boolean(inner),
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Formula::Not(Box::new(self.boolean(expr))),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => Formula::And(vec![self.boolean(left), self.boolean(right)]),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Or,
                right,
            } => Formula::Or(vec![self.boolean(left), self.boolean(right)]),
            Expr::BinaryOp { left, op, right } => {
                let (l, r) = (self.value(left), self.value(right));
                match op {
                    BinaryOperator::Eq => self.compare(Rel::Eq, l, r),
                    BinaryOperator::NotEq => Formula::Not(Box::new(self.compare(Rel::Eq, l, r))),
                    BinaryOperator::LtEq => self.compare(Rel::Le, l, r),
                    BinaryOperator::GtEq => self.compare(Rel::Le, r, l),
                    BinaryOperator::Lt => Formula::Not(Box::new(self.compare(Rel::Le, r, l))),
                    BinaryOperator::Gt => Formula::Not(Box::new(self.compare(Rel::Le, l, r))),
                    BinaryOperator::PGLikeMatch => self.like(l, r, false),
                    BinaryOperator::PGILikeMatch => self.like(l, r, true),
                    BinaryOperator::PGNotLikeMatch => {
                        Formula::Not(Box::new(self.like(l, r, false)))
                    }
                    BinaryOperator::PGNotILikeMatch => {
                        Formula::Not(Box::new(self.like(l, r, true)))
                    }
                    other => self.other_test(&other.to_string(), l, r),
                }
            }
            Expr::IsNull(inner) => self.null_test(inner, false),
            Expr::IsNotNull(inner) => self.null_test(inner, true),
            Expr::IsTrue(inner) => self.is(inner, IsTest::True),
            Expr::IsNotTrue(inner) => self.is(inner, IsTest::NotTrue),
            Expr::IsFalse(inner) => self.is(inner, IsTest::False),
            Expr::IsNotFalse(inner) => self.is(inner, IsTest::NotFalse),
            Expr::IsUnknown(inner) => self.is(inner, IsTest::Unknown),
            Expr::IsNotUnknown(inner) => self.is(inner, IsTest::NotUnknown),
            Expr::IsDistinctFrom(a, b) => Formula::Not(Box::new(self.not_distinct(a, b))),
            Expr::IsNotDistinctFrom(a, b) => self.not_distinct(a, b),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let v = self.value(expr);
                let any = Formula::Or(
                    list.iter()
                        .map(|item| {
                            let item = self.value(item);
                            self.compare(Rel::Eq, v.clone(), item)
                        })
                        .collect(),
                );
                negate_if(any, *negated)
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (v, lo, hi) = (self.value(expr), self.value(low), self.value(high));
                let within = Formula::And(vec![
                    self.compare(Rel::Le, lo, v.clone()),
                    self.compare(Rel::Le, v, hi),
                ]);
                negate_if(within, *negated)
            }
            Expr::Like {
                negated,
                expr,
                pattern,
                escape_char: None,
                any: false,
            } => {
                let (v, p) = (self.value(expr), self.value(pattern));
                negate_if(self.like(v, p, false), *negated)
            }
            Expr::ILike {
                negated,
                expr,
                pattern,
                escape_char: None,
                any: false,
            } => {
                let (v, p) = (self.value(expr), self.value(pattern));
                negate_if(self.like(v, p, true), *negated)
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let operand = operand.as_ref().map(|o| self.value(o));
                let arms = conditions
                    .iter()
                    .map(|w| {
                        let cond = match &operand {
                            Some(o) => {
                                let c = self.value(&w.condition);
                                self.compare(Rel::Eq, o.clone(), c)
                            }
                            None => self.boolean(&w.condition),
                        };
                        (cond, self.boolean(&w.result))
                    })
                    .collect();
                let otherwise = else_result
                    .as_ref()
                    .map_or(Formula::Const(T3::Null), |e| self.boolean(e));
                Formula::Case(arms, Box::new(otherwise))
            }
            Expr::Exists { .. }
            | Expr::InSubquery { .. }
            | Expr::AnyOp { .. }
            | Expr::AllOp { .. }
            | Expr::Subquery(_) => self.free(),
            // A boolean value: a column, a cast, a function result, a literal.
            other => match self.value(other) {
                Val::Null => Formula::Const(T3::Null),
                Val::Lit(Lit::Bool(b)) => Formula::Const(if b { T3::True } else { T3::False }),
                Val::Lit(Lit::Str(s)) => match parse_bool(&s) {
                    Some(b) => Formula::Const(if b { T3::True } else { T3::False }),
                    None => self.free(),
                },
                Val::Lit(Lit::Num(..)) => self.free(),
                v @ Val::Unknown(_) => self.other_test("is true", v, Val::Lit(Lit::Bool(true))),
            },
        }
    }

    fn null_test(&mut self, inner: &Expr, negated: bool) -> Formula {
        if is_boolean_shaped(inner) {
            let f = self.boolean(inner);
            return Formula::Is(
                Box::new(f),
                if negated {
                    IsTest::NotUnknown
                } else {
                    IsTest::Unknown
                },
            );
        }
        let null = match self.value(inner) {
            Val::Null => Formula::Const(T3::True),
            Val::Lit(_) => Formula::Const(T3::False),
            Val::Unknown(i) => Formula::IsNull(i),
        };
        negate_if(null, negated)
    }

    fn is(&mut self, inner: &Expr, test: IsTest) -> Formula {
        let f = self.boolean(inner);
        Formula::Is(Box::new(f), test)
    }

    fn nullness(v: &Val) -> Formula {
        match v {
            Val::Null => Formula::Const(T3::True),
            Val::Lit(_) => Formula::Const(T3::False),
            Val::Unknown(i) => Formula::IsNull(*i),
        }
    }

    /// `a IS NOT DISTINCT FROM b`: both NULL, or neither and equal.
    fn not_distinct(&mut self, a: &Expr, b: &Expr) -> Formula {
        let (a, b) = (self.value(a), self.value(b));
        let (na, nb) = (Self::nullness(&a), Self::nullness(&b));
        let equal = self.compare(Rel::Eq, a, b);
        Formula::Or(vec![
            Formula::And(vec![na.clone(), nb.clone()]),
            Formula::And(vec![
                Formula::Not(Box::new(na)),
                Formula::Not(Box::new(nb)),
                Formula::Is(Box::new(equal), IsTest::True),
            ]),
        ])
    }

    fn compare(&mut self, rel: Rel, a: Val, b: Val) -> Formula {
        match (&a, &b) {
            (Val::Null, _) | (_, Val::Null) => return Formula::Const(T3::Null),
            (Val::Lit(x), Val::Lit(y)) => {
                if let Some(t) = compare_literals(rel, x, y) {
                    return Formula::Const(if t { T3::True } else { T3::False });
                }
            }
            // A value compared with itself (see the module docs).
            (Val::Unknown(x), Val::Unknown(y)) if x == y => return Formula::Const(T3::True),
            _ => {}
        }
        let (ka, kb) = (operand_key(&a), operand_key(&b));
        let key = match rel {
            Rel::Eq if ka <= kb => CmpKey::Eq(ka, kb),
            Rel::Eq => CmpKey::Eq(kb, ka),
            Rel::Le => CmpKey::Le(ka, kb),
        };
        self.atom(key, &[a, b])
    }

    fn like(&mut self, v: Val, pattern: Val, insensitive: bool) -> Formula {
        match (&v, &pattern) {
            (Val::Null, _) | (_, Val::Null) => Formula::Const(T3::Null),
            (Val::Lit(Lit::Str(s)), Val::Lit(Lit::Str(p))) => {
                let (s, p) = if insensitive {
                    (s.to_lowercase(), p.to_lowercase())
                } else {
                    (s.clone(), p.clone())
                };
                Formula::Const(if like_match(&s, &p) {
                    T3::True
                } else {
                    T3::False
                })
            }
            // A pattern that matches every string (see the module docs).
            (Val::Unknown(_), Val::Lit(Lit::Str(p)))
                if !p.is_empty() && p.chars().all(|c| c == '%') =>
            {
                Formula::Const(T3::True)
            }
            _ => self.other_test(if insensitive { "ilike" } else { "like" }, v, pattern),
        }
    }

    fn other_test(&mut self, op: &str, a: Val, b: Val) -> Formula {
        if matches!(a, Val::Null) || matches!(b, Val::Null) {
            return Formula::Const(T3::Null);
        }
        let key = CmpKey::Other(op.to_owned(), operand_key(&a), operand_key(&b));
        self.atom(key, &[a, b])
    }

    fn atom(&mut self, key: CmpKey, operands: &[Val]) -> Formula {
        if let Some(&i) = self.comparisons.get(&key) {
            return Formula::Cmp(i);
        }
        let var = self.var(Var::Outcome);
        let nulls = operands
            .iter()
            .filter_map(|v| match v {
                Val::Unknown(i) => Some(*i),
                _ => None,
            })
            .collect();
        self.cmp_operands.push((var, nulls));
        let index = self.cmp_operands.len() - 1;
        self.comparisons.insert(key, index);
        Formula::Cmp(index)
    }

    // ---- deciding ---------------------------------------------------------

    /// Whether `f` is true under every assignment.
    fn always_true(&self, f: &Formula) -> bool {
        if self.truths(f) == Truths::one(T3::True) {
            return true;
        }
        let total = self
            .vars
            .iter()
            .try_fold(1u64, |acc, v| acc.checked_mul(v.states()))
            .unwrap_or(u64::MAX);
        if total > MAX_ASSIGNMENTS {
            return false;
        }
        let mut state = vec![0u8; self.vars.len()];
        for mut n in 0..total {
            for (slot, var) in state.iter_mut().zip(&self.vars) {
                let states = var.states();
                *slot = (n % states) as u8;
                n /= states;
            }
            if self.eval(f, &state) != T3::True {
                return false;
            }
        }
        true
    }

    fn eval(&self, f: &Formula, state: &[u8]) -> T3 {
        match f {
            Formula::Const(t) => *t,
            Formula::Cmp(i) => {
                let (var, nulls) = &self.cmp_operands[*i];
                if nulls.iter().any(|&v| state[v] == 1) {
                    T3::Null
                } else if state[*var] == 0 {
                    T3::True
                } else {
                    T3::False
                }
            }
            Formula::IsNull(v) => {
                if state[*v] == 1 {
                    T3::True
                } else {
                    T3::False
                }
            }
            Formula::Free(v) => match state[*v] {
                0 => T3::True,
                1 => T3::False,
                _ => T3::Null,
            },
            Formula::Not(inner) => self.eval(inner, state).not(),
            Formula::And(parts) => parts
                .iter()
                .fold(T3::True, |acc, p| acc.and(self.eval(p, state))),
            Formula::Or(parts) => parts
                .iter()
                .fold(T3::False, |acc, p| acc.or(self.eval(p, state))),
            Formula::Is(inner, test) => is_test(self.eval(inner, state), *test),
            Formula::Case(arms, otherwise) => arms
                .iter()
                .find(|(cond, _)| self.eval(cond, state) == T3::True)
                .map_or_else(|| self.eval(otherwise, state), |(_, r)| self.eval(r, state)),
        }
    }

    /// Every value `f` can take, with every variable free (coarse: a
    /// variable met twice is not kept consistent, so it never claims a
    /// tautology that is not one).
    fn truths(&self, f: &Formula) -> Truths {
        match f {
            Formula::Const(t) => Truths::one(*t),
            Formula::Cmp(i) => {
                if self.cmp_operands[*i].1.is_empty() {
                    Truths(T3::True.bit() | T3::False.bit())
                } else {
                    Truths::ALL
                }
            }
            Formula::IsNull(_) => Truths(T3::True.bit() | T3::False.bit()),
            Formula::Free(_) => Truths::ALL,
            Formula::Not(inner) => self.truths(inner).map(T3::not),
            Formula::And(parts) => parts.iter().fold(Truths::one(T3::True), |acc, p| {
                acc.map2(self.truths(p), T3::and)
            }),
            Formula::Or(parts) => parts.iter().fold(Truths::one(T3::False), |acc, p| {
                acc.map2(self.truths(p), T3::or)
            }),
            Formula::Is(inner, test) => self.truths(inner).map(|t| is_test(t, *test)),
            Formula::Case(arms, otherwise) => {
                let mut out = self.truths(otherwise).0;
                for (_, r) in arms {
                    out |= self.truths(r).0;
                }
                Truths(out)
            }
        }
    }
}

/// The comparisons [`Builder::compare`] normalises to.
#[derive(Debug, Clone, Copy)]
enum Rel {
    Eq,
    Le,
}

fn negate_if(f: Formula, negated: bool) -> Formula {
    if negated {
        Formula::Not(Box::new(f))
    } else {
        f
    }
}

fn is_test(t: T3, test: IsTest) -> T3 {
    let holds = match test {
        IsTest::True => t == T3::True,
        IsTest::NotTrue => t != T3::True,
        IsTest::False => t == T3::False,
        IsTest::NotFalse => t != T3::False,
        IsTest::Unknown => t == T3::Null,
        IsTest::NotUnknown => t != T3::Null,
    };
    if holds { T3::True } else { T3::False }
}

/// Whether an expression is a truth value by its form (so `IS NULL` of it
/// tests for UNKNOWN).
fn is_boolean_shaped(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => is_boolean_shaped(inner),
        Expr::BinaryOp { op, .. } => matches!(
            op,
            BinaryOperator::And
                | BinaryOperator::Or
                | BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
                | BinaryOperator::PGLikeMatch
                | BinaryOperator::PGILikeMatch
                | BinaryOperator::PGNotLikeMatch
                | BinaryOperator::PGNotILikeMatch
        ),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            ..
        }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsNotTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsNotFalse(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotUnknown(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..)
        | Expr::InList { .. }
        | Expr::Between { .. }
        | Expr::Like { .. }
        | Expr::ILike { .. } => true,
        _ => false,
    }
}

fn operand_key(v: &Val) -> String {
    match v {
        Val::Null => "null".to_owned(),
        Val::Lit(l) => format!("{l:?}"),
        Val::Unknown(i) => format!("#{i}"),
    }
}

/// A numeric literal; its text is kept when PostgreSQL prints the number
/// the same way (no exponent, no leading zeros).
fn number(text: &str) -> Option<Lit> {
    let n: f64 = text.parse().ok()?;
    let plain = {
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && (int == "0" || !int.starts_with('0'))
            && frac.bytes().all(|b| b.is_ascii_digit())
            && (frac.is_empty() != text.contains('.'))
    };
    Some(Lit::Num(n, plain.then(|| text.to_owned())))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_lowercase().as_str() {
        "t" | "tr" | "tru" | "true" | "y" | "ye" | "yes" | "on" | "1" => Some(true),
        "f" | "fa" | "fal" | "fals" | "false" | "n" | "no" | "of" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A literal as PostgreSQL would read it for a comparison with a number.
fn as_number(l: &Lit) -> Option<f64> {
    match l {
        Lit::Num(n, _) => Some(*n),
        Lit::Str(s) => s.trim().parse().ok().filter(|n: &f64| n.is_finite()),
        Lit::Bool(_) => None,
    }
}

// SQL compares these numbers exactly; so does the fold.
#[allow(clippy::float_cmp)]
fn compare_literals(rel: Rel, x: &Lit, y: &Lit) -> Option<bool> {
    match (x, y) {
        (Lit::Str(a), Lit::Str(b)) => match rel {
            // Equality under a deterministic collation is byte equality;
            // order depends on the collation, so it is not folded.
            Rel::Eq => Some(a == b),
            Rel::Le => None,
        },
        (Lit::Bool(a), Lit::Bool(b)) => Some(match rel {
            Rel::Eq => a == b,
            Rel::Le => a <= b,
        }),
        (Lit::Bool(a), Lit::Str(s)) => {
            parse_bool(s).and_then(|b| compare_literals(rel, &Lit::Bool(*a), &Lit::Bool(b)))
        }
        (Lit::Str(s), Lit::Bool(b)) => {
            parse_bool(s).and_then(|a| compare_literals(rel, &Lit::Bool(a), &Lit::Bool(*b)))
        }
        _ => {
            let (a, b) = (as_number(x)?, as_number(y)?);
            Some(match rel {
                Rel::Eq => a == b,
                Rel::Le => a <= b,
            })
        }
    }
}

fn fold_binary(op: &BinaryOperator, left: &Val, right: &Val) -> Option<Val> {
    let strict = matches!(
        op,
        BinaryOperator::Plus
            | BinaryOperator::Minus
            | BinaryOperator::Multiply
            | BinaryOperator::Divide
            | BinaryOperator::Modulo
            | BinaryOperator::StringConcat
    );
    if !strict {
        return None;
    }
    if matches!(left, Val::Null) || matches!(right, Val::Null) {
        return Some(Val::Null);
    }
    let (Val::Lit(x), Val::Lit(y)) = (left, right) else {
        return None;
    };
    if *op == BinaryOperator::StringConcat {
        return match (x, y) {
            (Lit::Str(x), Lit::Str(y)) => Some(Val::Lit(Lit::Str(format!("{x}{y}")))),
            _ => None,
        };
    }
    let (Lit::Num(x, _), Lit::Num(y, _)) = (x, y) else {
        return None;
    };
    let n = match op {
        BinaryOperator::Plus => x + y,
        BinaryOperator::Minus => x - y,
        BinaryOperator::Multiply => x * y,
        // Division by zero is an error at run time, not a value.
        BinaryOperator::Divide if *y != 0.0 => x / y,
        BinaryOperator::Modulo if *y != 0.0 => x % y,
        _ => return None,
    };
    n.is_finite().then_some(Val::Lit(Lit::Num(n, None)))
}

/// A literal cast to `ty`, when hoop can tell the result.
fn cast(lit: Lit, ty: &DataType) -> Option<Lit> {
    let name = ty.to_string().to_lowercase();
    let base = name.split('(').next().unwrap_or_default().trim();
    let numeric = matches!(
        base,
        "int"
            | "integer"
            | "int2"
            | "int4"
            | "int8"
            | "smallint"
            | "bigint"
            | "numeric"
            | "decimal"
            | "real"
            | "float"
            | "float4"
            | "float8"
            | "double precision"
    );
    let text = matches!(base, "text" | "varchar" | "character varying");
    let boolean = matches!(base, "bool" | "boolean");
    match lit {
        Lit::Num(n, t) if numeric => {
            // Integer casts round; keep it simple: only exact integers fold.
            let integer = matches!(
                base,
                "int" | "integer" | "int2" | "int4" | "int8" | "smallint" | "bigint"
            );
            (!integer || n.fract() == 0.0).then_some(Lit::Num(n, t))
        }
        Lit::Str(s) if numeric => {
            let integer = matches!(
                base,
                "int" | "integer" | "int2" | "int4" | "int8" | "smallint" | "bigint"
            );
            let n: f64 = s.trim().parse().ok()?;
            (n.is_finite() && (!integer || n.fract() == 0.0)).then_some(Lit::Num(n, None))
        }
        Lit::Num(_, Some(t)) if text => Some(Lit::Str(t)),
        Lit::Str(s) if text => Some(Lit::Str(s)),
        Lit::Bool(b) if text => Some(Lit::Str(if b { "true" } else { "false" }.to_owned())),
        Lit::Str(s) if boolean => parse_bool(&s).map(Lit::Bool),
        Lit::Bool(b) if boolean => Some(Lit::Bool(b)),
        Lit::Num(n, _) if boolean && n.fract() == 0.0 => Some(Lit::Bool(n != 0.0)),
        _ => None,
    }
}

/// A few immutable built-ins of constants.
fn fold_function(name: &str, args: &[Val]) -> Option<Val> {
    let str_arg = |v: &Val| match v {
        Val::Lit(Lit::Str(s)) => Some(s.clone()),
        _ => None,
    };
    match (name, args) {
        ("coalesce", args) => {
            for a in args {
                match a {
                    Val::Null => {}
                    Val::Lit(_) => return Some(a.clone()),
                    Val::Unknown(_) => return None,
                }
            }
            Some(Val::Null)
        }
        ("nullif", [a, b]) => match (a, b) {
            (Val::Null, _) => Some(Val::Null),
            (Val::Lit(x), Val::Lit(y)) => {
                compare_literals(Rel::Eq, x, y).map(|eq| if eq { Val::Null } else { a.clone() })
            }
            (Val::Lit(_), Val::Null) => Some(a.clone()),
            _ => None,
        },
        (_, args) if args.iter().any(|a| matches!(a, Val::Null)) && name != "concat" => {
            // Every other routine folded here is strict.
            matches!(
                name,
                "lower" | "upper" | "length" | "char_length" | "character_length" | "abs"
            )
            .then_some(Val::Null)
        }
        ("lower", [a]) => str_arg(a).map(|s| Val::Lit(Lit::Str(s.to_lowercase()))),
        ("upper", [a]) => str_arg(a).map(|s| Val::Lit(Lit::Str(s.to_uppercase()))),
        ("length" | "char_length" | "character_length", [a]) => {
            str_arg(a).map(|s| Val::Lit(Lit::Num(s.chars().count() as f64, None)))
        }
        ("abs", [Val::Lit(Lit::Num(n, _))]) => Some(Val::Lit(Lit::Num(n.abs(), None))),
        ("concat", args) => {
            let mut out = String::new();
            for a in args {
                match a {
                    Val::Null => {}
                    Val::Lit(Lit::Str(s)) => out.push_str(s),
                    _ => return None,
                }
            }
            Some(Val::Lit(Lit::Str(out)))
        }
        _ => None,
    }
}

/// SQL `LIKE` with `%` and `_` and the default `\` escape.
fn like_match(s: &str, pattern: &str) -> bool {
    fn go(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| go(&s[i..], rest)),
            Some(('_', rest)) => !s.is_empty() && go(&s[1..], rest),
            Some(('\\', rest)) => match rest.split_first() {
                Some((c, rest)) => s.first() == Some(c) && go(&s[1..], rest),
                None => false,
            },
            Some((c, rest)) => s.first() == Some(c) && go(&s[1..], rest),
        }
    }
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Patterns are short; a pathological one is not folded.
    if p.iter().filter(|c| **c == '%').count() > 8 {
        return false;
    }
    go(&s, &p)
}

/// Folds identifiers and drops target qualifiers, so that spellings of one
/// expression share a key.
struct Canonical<'b, 'a> {
    builder: &'b Builder<'a>,
}

impl VisitorMut for Canonical<'_, '_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(i) => {
                *i = Ident::new(self.builder.dialect.fold(i));
            }
            Expr::CompoundIdentifier(parts) => {
                let key = self.builder.column_key(parts);
                *expr = Expr::Identifier(Ident::new(key));
            }
            Expr::Function(f) => {
                for part in &mut f.name.0 {
                    if let Some(i) = part.as_ident() {
                        let folded = Ident::new(self.builder.dialect.fold(i));
                        *part = sqlparser::ast::ObjectNamePart::Identifier(folded);
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pg::Postgres;

    fn restricts_where(predicate: &str) -> bool {
        let sql = format!("DELETE FROM orders o WHERE {predicate}");
        let sqlparser::ast::Statement::Delete(d) = Postgres.parse_statement(&sql).unwrap() else {
            panic!("not a delete")
        };
        let target = Target {
            names: vec!["orders".into(), "o".into()],
        };
        restricts(d.selection.as_ref(), &Postgres, Some(&target))
    }

    #[test]
    fn predicates_true_for_every_row_restrict_nothing() {
        for all in [
            "true",
            "1 = 1",
            "'a' = 'a'",
            "2 > 1",
            "NOT false",
            "1 IS NOT NULL",
            "NULL IS NULL",
            "random() < 2",
            "1 = 1 OR id = 5",
            "id = 5 OR true",
            "id = id",
            "o.id = id",
            "orders.id = o.id",
            "lower(name) = lower(NAME)",
            "id::text = id::text",
            "id >= id AND id <= id",
            "NOT (id <> id)",
            "id BETWEEN id AND id",
            "id IN (id, 3)",
            "id IS NOT DISTINCT FROM id",
            "name LIKE '%'",
            "name ILIKE '%%'",
            "id > 0 OR id <= 0 OR id IS NULL",
            "id = 5 OR id <> 5 OR id IS NULL",
            "(id = 5) IS NOT UNKNOWN OR id IS NULL",
            "id IS NULL OR id IS NOT NULL",
            "flag OR NOT flag OR flag IS NULL",
            "(id = 5) IS TRUE OR (id = 5) IS NOT TRUE",
            "coalesce(NULL, 1) = 1",
            "length('abc') = 3",
            "lower('ABC') = 'abc'",
            "'1'::int = 1",
            "1 + 1 = 2",
            "'a' || 'b' = 'ab'",
            "'abc' LIKE 'a%'",
            "CASE WHEN id > 5 THEN true ELSE true END",
            "CASE WHEN id IS NULL THEN true ELSE id = id END",
            "1 IN (1, 2)",
            "3 BETWEEN 1 AND 5",
            "id = id AND 2 = 2",
            "NOT (id IS NULL AND id IS NOT NULL)",
            "(SELECT 1) IS NOT NULL OR true",
        ] {
            assert!(!restricts_where(all), "{all} should count as no WHERE");
        }
    }

    #[test]
    fn real_filters_restrict() {
        for filter in [
            "id = 5",
            "id = $1",
            "1 = 1 AND id = 7",
            "true AND id = 7",
            "id = 5 OR false",
            "id = 5 OR 1 = 0",
            "NOT (id <> 5)",
            "id IS NOT NULL",
            "archived_at IS NULL",
            "id IN (SELECT id FROM orders)",
            "id > 0 OR id <= 0",
            "id = 5 OR NOT id = 5",
            "name LIKE 'a%'",
            "name LIKE ''",
            "id = id + 0",
            "o.id = c.id",
            "random() = random() AND id = 1",
            "id = random()",
            "CASE WHEN id > 5 THEN true END",
            "EXISTS (SELECT 1 FROM customers c WHERE c.id = o.cid)",
            "id IN (1, 2, 3)",
            "created < now()",
            "flag",
            "NOT flag",
            "purge_me(id)",
            "'b' > 'a' AND id = 1",
        ] {
            assert!(restricts_where(filter), "{filter} should restrict rows");
        }
    }

    #[test]
    fn large_predicates_stay_decidable() {
        let many: Vec<String> = (0..200).map(|i| format!("id = {i}")).collect();
        assert!(restricts_where(&many.join(" OR ")));
        let many_true = format!("{} OR true", many.join(" OR "));
        assert!(!restricts_where(&many_true));
        let list: Vec<String> = (0..500).map(|i| i.to_string()).collect();
        assert!(restricts_where(&format!("id IN ({})", list.join(", "))));
    }

    #[test]
    fn like_matching() {
        assert!(like_match("abc", "a%"));
        assert!(like_match("abc", "_b_"));
        assert!(!like_match("abc", "b%"));
        assert!(like_match("a%c", "a\\%c"));
        assert!(!like_match("abc", "a\\%c"));
    }
}
