//! CEL rules of `x-kubernetes-validations`: compiling, bounding their cost and running
//! them with `self` (and `oldSelf` for transition rules) bound to a schema node's value.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::objects::{Key, Map};
use cel::{Context, Env, IdedExpr, Program, Value as CelValue};
use serde_json::Value;

use super::MAX_DEPTH;

/// The longest rule (or message expression) accepted, in bytes.
pub const MAX_RULE_BYTES: usize = 16 * 1024;

/// The most estimated cost one rule may spend on one value (upstream's per-call limit).
pub const PER_CALL_COST_LIMIT: u64 = 1_000_000;

/// The most estimated cost all rules may spend on one object (upstream's runtime budget).
pub const PER_OBJECT_COST_BUDGET: u64 = 10_000_000;

/// The CEL environment of validation rules, built once: the standard library and the
/// strings extension (`lowerAscii`, `split`, `join`, ... as Kubernetes offers them).
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // Adding a built-in extension to a fresh environment cannot conflict; if it ever
    // did, rules would simply lack those functions.
    let _ = env.add_extension(cel::extensions::strings);
    Arc::new(env)
});

/// The deepest expression nesting a rule may have (evaluation recurses that deep).
const MAX_AST_DEPTH: usize = 128;

/// The deepest comprehension nesting a rule may have.
const MAX_COMPREHENSION_DEPTH: u32 = 4;

/// Names a rule may refer to besides its own comprehension variables.
const DECLARED: &[&str] = &[
    "self",
    "oldSelf",
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// Why a rule cannot be compiled or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CelError {
    /// The rule text is longer than [`MAX_RULE_BYTES`].
    #[error("rule is {len} bytes long, longer than the limit of {MAX_RULE_BYTES}")]
    TooLong {
        /// The rule's length in bytes.
        len: usize,
    },
    /// The rule does not parse or refers to undeclared names.
    #[error("compilation failed: {0}")]
    Compile(String),
    /// The rule nests comprehensions too deeply to bound its cost.
    #[error(
        "compilation failed: comprehensions nested {0} deep, more than the limit of {MAX_COMPREHENSION_DEPTH}"
    )]
    TooComplex(u32),
    /// Evaluating the rule on this value would cost more than allowed.
    #[error(
        "validation failed due to running out of cost budget, no further validation rules will be run"
    )]
    CostExceeded,
    /// The rule failed while running.
    #[error("{0}")]
    Eval(String),
    /// The rule returned something other than a boolean.
    #[error("rule did not evaluate to a bool")]
    NotBool,
}

/// A compiled rule with what is needed to bound its cost.
#[derive(Debug)]
pub(crate) struct Compiled {
    program: Program,
    /// True when the rule mentions `oldSelf` (a transition rule).
    pub(crate) uses_old_self: bool,
    /// Number of AST nodes.
    nodes: u64,
    /// Deepest comprehension nesting.
    depth: u32,
}

/// Checks that `rule` compiles as a validation rule: it parses, refers only to `self`,
/// `oldSelf` and its own comprehension variables, and nests comprehensions boundedly.
pub fn compile_rule(rule: &str) -> Result<(), CelError> {
    compile(rule).map(|_| ())
}

/// Compiles a rule (see [`compile_rule`]).
pub(crate) fn compile(rule: &str) -> Result<Compiled, CelError> {
    if rule.len() > MAX_RULE_BYTES {
        return Err(CelError::TooLong { len: rule.len() });
    }
    let program = STDLIB
        .compile(rule)
        .map_err(|e| CelError::Compile(truncate(&e.to_string())))?;
    let mut walk = Walk::default();
    walk.visit(program.expression(), 0, 0, &mut Vec::new());
    if walk.too_deep {
        return Err(CelError::Compile(format!(
            "expression nests deeper than {MAX_AST_DEPTH} levels"
        )));
    }
    if let Some(name) = walk.undeclared {
        return Err(CelError::Compile(format!(
            "undeclared reference to '{name}'"
        )));
    }
    if walk.depth > MAX_COMPREHENSION_DEPTH {
        return Err(CelError::TooComplex(walk.depth));
    }
    Ok(Compiled {
        program,
        uses_old_self: walk.old_self,
        nodes: walk.nodes,
        depth: walk.depth,
    })
}

/// Collects facts about a rule's AST.
#[derive(Default)]
struct Walk {
    nodes: u64,
    depth: u32,
    old_self: bool,
    undeclared: Option<String>,
    too_deep: bool,
}

impl Walk {
    fn visit(&mut self, e: &IdedExpr, depth: u32, nest: usize, bound: &mut Vec<String>) {
        if nest > MAX_AST_DEPTH {
            self.too_deep = true;
            return;
        }
        let n = nest + 1;
        self.nodes += 1;
        self.depth = self.depth.max(depth);
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => {
                if name == "oldSelf" {
                    self.old_self = true;
                }
                let known = name.starts_with('@')
                    || DECLARED.contains(&name.as_str())
                    || bound.iter().any(|b| b == name);
                if !known && self.undeclared.is_none() {
                    self.undeclared = Some(name.clone());
                }
            }
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    self.visit(t, depth, n, bound);
                }
                for a in &call.args {
                    self.visit(a, depth, n, bound);
                }
            }
            Expr::Select(sel) => self.visit(&sel.operand, depth, n, bound),
            Expr::List(list) => {
                for el in &list.elements {
                    self.visit(el, depth, n, bound);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    self.visit_entry(&entry.expr, depth, n, bound);
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    self.visit_entry(&entry.expr, depth, n, bound);
                }
            }
            Expr::Comprehension(c) => {
                let inner = depth + 1;
                // The range's own comprehensions run before and as often as this one.
                self.visit(&c.iter_range, inner, n, bound);
                let before = bound.len();
                bound.push(c.iter_var.clone());
                if let Some(v2) = &c.iter_var2 {
                    bound.push(v2.clone());
                }
                bound.push(c.accu_var.clone());
                self.visit(&c.accu_init, inner, n, bound);
                self.visit(&c.loop_cond, inner, n, bound);
                self.visit(&c.loop_step, inner, n, bound);
                self.visit(&c.result, inner, n, bound);
                bound.truncate(before);
            }
        }
    }

    fn visit_entry(&mut self, entry: &EntryExpr, depth: u32, n: usize, bound: &mut Vec<String>) {
        match entry {
            EntryExpr::StructField(f) => self.visit(&f.value, depth, n, bound),
            EntryExpr::MapEntry(m) => {
                self.visit(&m.key, depth, n, bound);
                self.visit(&m.value, depth, n, bound);
            }
        }
    }
}

/// The size of a value for cost estimation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Size {
    /// Values in it (every scalar, list and map counts one).
    pub(crate) nodes: u64,
    /// The longest string (or map key) in it, in bytes.
    pub(crate) longest: u64,
}

impl Size {
    /// The size of two values together.
    pub(crate) fn plus(self, other: Size) -> Size {
        Size {
            nodes: self.nodes + other.nodes,
            longest: self.longest.max(other.longest),
        }
    }
}

/// Measures a value without recursion.
pub(crate) fn size_of(v: &Value) -> Size {
    let mut size = Size::default();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        size.nodes += 1;
        match v {
            Value::String(s) => size.longest = size.longest.max(s.len() as u64),
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(o) => {
                for (k, x) in o {
                    size.longest = size.longest.max(k.len() as u64);
                    stack.push(x);
                }
            }
            _ => {}
        }
    }
    size
}

impl Compiled {
    /// An estimate of what running this rule on data of `size` costs: each AST node
    /// runs once per iteration of every comprehension around it (each iterating over at
    /// most all the values) and may scan the longest string (at a tenth of a unit per
    /// byte, as upstream's cost model charges string operations).
    pub(crate) fn estimate(&self, size: Size) -> u64 {
        let mut cost = self.nodes.saturating_mul(1 + size.longest / 10);
        for _ in 0..self.depth {
            cost = cost.saturating_mul(size.nodes.max(1));
        }
        cost
    }

    /// Runs the rule with `self` (and `oldSelf` when given) bound; values are converted
    /// by their schemas so that `number` fields are doubles.
    pub(crate) fn eval(
        &self,
        self_val: &Value,
        self_schema: &Value,
        old: Option<&Value>,
    ) -> Result<CelValue, CelError> {
        let mut ctx = Context::with_env(Arc::clone(&STDLIB));
        ctx.add_variable_from_value("self", to_cel(self_val, Some(self_schema), 0));
        if let Some(o) = old {
            ctx.add_variable_from_value("oldSelf", to_cel(o, Some(self_schema), 0));
        }
        // The interpreter is third-party code running user rules: a panic in it must
        // fail the rule, not the request.
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.program.execute(&ctx)));
        match run {
            Ok(r) => r.map_err(|e| CelError::Eval(truncate(&e.to_string()))),
            Err(_) => Err(CelError::Eval("internal error evaluating the rule".into())),
        }
    }
}

/// Shortens long evaluation messages (they may embed whole values).
fn truncate(s: &str) -> String {
    const MAX: usize = 256;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Converts JSON to a CEL value, guided by the schema where there is one.
pub(crate) fn to_cel(v: &Value, schema: Option<&Value>, depth: usize) -> CelValue {
    if depth > MAX_DEPTH {
        return CelValue::Null;
    }
    let ty = schema.and_then(|s| s.get("type")).and_then(Value::as_str);
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => {
            if ty == Some("number") {
                CelValue::Float(n.as_f64().unwrap_or(0.0))
            } else if let Some(i) = n.as_i64() {
                CelValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                CelValue::UInt(u)
            } else {
                CelValue::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(a) => {
            let items = schema.and_then(|s| s.get("items"));
            CelValue::List(Arc::new(
                a.iter().map(|x| to_cel(x, items, depth + 1)).collect(),
            ))
        }
        Value::Object(o) => {
            let mut map = HashMap::with_capacity(o.len());
            for (k, x) in o {
                let sub = schema.and_then(|s| {
                    s.get("properties")
                        .and_then(|p| p.get(k))
                        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                });
                map.insert(Key::String(Arc::new(k.clone())), to_cel(x, sub, depth + 1));
            }
            CelValue::Map(Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compile_checks() {
        let cases: &[(&str, Result<bool, &str>)] = &[
            ("self.replicas <= 10", Ok(false)),
            ("self.image == oldSelf.image", Ok(true)),
            ("self.items.all(i, i.name != '')", Ok(false)),
            ("self.name.lowerAscii().split('-').size() > 0", Ok(false)),
            ("self.x ==", Err("compilation failed")),
            ("foo > 1", Err("undeclared reference to 'foo'")),
            (
                "self.a.all(x, self.a.all(y, self.a.all(z, self.a.all(w, self.a.all(v, true)))))",
                Err("nested 5 deep"),
            ),
        ];
        for (rule, want) in cases {
            let got = compile(rule);
            match (want, got) {
                (Ok(old), Ok(c)) => assert_eq!(c.uses_old_self, *old, "{rule}"),
                (Err(msg), Err(e)) => assert!(e.to_string().contains(msg), "{rule}: {e}"),
                (w, g) => panic!("{rule}: want {w:?}, got {:?}", g.map(|c| c.uses_old_self)),
            }
        }
        let deep = "1 + ".repeat(3000) + "1 > 0";
        assert!(
            compile(&deep)
                .unwrap_err()
                .to_string()
                .contains("nests deeper")
        );
        let long = "true && ".repeat(3000) + "true";
        assert!(matches!(compile(&long), Err(CelError::TooLong { .. })));
    }

    #[test]
    fn numbers_follow_schema() {
        let schema = json!({"type": "object", "properties": {"f": {"type": "number"}}});
        let c = compile("self.f == 2.0 && self.i == 3").unwrap();
        let out = c.eval(&json!({"f": 2, "i": 3}), &schema, None).unwrap();
        assert_eq!(out, CelValue::Bool(true));
    }

    #[test]
    fn estimate_grows_with_nesting() {
        let flat = compile("self.a.all(x, x > 0)").unwrap();
        let nested = compile("self.a.all(x, self.a.all(y, x != y))").unwrap();
        let list = json!({"a": (0..1000).collect::<Vec<i64>>()});
        let size = size_of(&list);
        assert_eq!(
            size,
            Size {
                nodes: 1002,
                longest: 1
            }
        );
        assert!(flat.estimate(size) < PER_CALL_COST_LIMIT);
        assert!(nested.estimate(size) > PER_CALL_COST_LIMIT);
        // A long string costs per byte, but a plain rule on it stays affordable.
        let text = json!({"s": "x".repeat(1_000_000)});
        let plain = compile("self.s.startsWith('x')").unwrap();
        assert!(plain.estimate(size_of(&text)) < PER_CALL_COST_LIMIT);
    }
}
