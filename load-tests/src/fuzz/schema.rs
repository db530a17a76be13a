//! GraphQL documents generated from `schema.graphql`: valid operations with random
//! selections and arguments, mutated ones (wrong types, unknown fields, missing or
//! unknown arguments, broken syntax), oversized ones (huge strings, many aliases, many
//! fragments, deep nesting) and plain garbage. Every document comes from one
//! [`rand::rngs::StdRng`] seeded per document, so a seed and an index reproduce it.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{anyhow, Context};
use async_graphql_parser::types::{BaseType, InputValueDefinition, Type, TypeKind, TypeSystemDefinition};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Map, Value};

/// A field or an argument as the generator needs it.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub args: Vec<Arg>,
    pub ty: Type,
}

#[derive(Debug, Clone)]
pub struct Arg {
    pub name: String,
    pub ty: Type,
    pub has_default: bool,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Scalar,
    Object(Vec<Field>),
    /// Interfaces and unions: what may stand for them, and the fields they share.
    Abstract {
        possible: Vec<String>,
        fields: Vec<Field>,
    },
    Enum(Vec<String>),
    Input(Vec<Arg>),
}

/// The schema, reduced to what generating documents takes.
#[derive(Debug)]
pub struct Schema {
    pub types: HashMap<String, Kind>,
    pub query: String,
    pub mutation: Option<String>,
    pub subscription: Option<String>,
}

/// What the generator knows of the server's data, so some arguments hit real rows.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub ids: Vec<String>,
    pub cursors: Vec<String>,
}

/// One generated request: the document (or a whole raw body), variables, and the
/// class it was generated as (counted in the report).
#[derive(Debug, Clone)]
pub struct Generated {
    pub class: &'static str,
    /// `Some` when this is an operation to send as `{query, variables}`.
    pub query: Option<String>,
    pub variables: Value,
    /// `Some` when the whole HTTP body (or WebSocket frame) is raw bytes instead.
    pub raw: Option<Vec<u8>>,
    pub operation: OpKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Query,
    Mutation,
    Subscription,
}

fn convert_args(args: &[async_graphql_parser::Positioned<InputValueDefinition>]) -> Vec<Arg> {
    args.iter()
        .map(|a| Arg {
            name: a.node.name.node.to_string(),
            ty: a.node.ty.node.clone(),
            has_default: a.node.default_value.is_some(),
        })
        .collect()
}

fn convert_fields(
    fields: &[async_graphql_parser::Positioned<async_graphql_parser::types::FieldDefinition>],
) -> Vec<Field> {
    fields
        .iter()
        .map(|f| Field {
            name: f.node.name.node.to_string(),
            args: convert_args(&f.node.arguments),
            ty: f.node.ty.node.clone(),
        })
        .collect()
}

impl Schema {
    pub fn parse(sdl: &str) -> anyhow::Result<Self> {
        let doc = async_graphql_parser::parse_schema(sdl).context("parsing schema.graphql")?;
        let mut types = HashMap::new();
        let (mut query, mut mutation, mut subscription) = (None, None, None);
        let mut implementers: HashMap<String, Vec<String>> = HashMap::new();
        for def in &doc.definitions {
            match def {
                TypeSystemDefinition::Schema(s) => {
                    query = s.node.query.as_ref().map(|n| n.node.to_string());
                    mutation = s.node.mutation.as_ref().map(|n| n.node.to_string());
                    subscription = s.node.subscription.as_ref().map(|n| n.node.to_string());
                }
                TypeSystemDefinition::Type(t) => {
                    let name = t.node.name.node.to_string();
                    let kind = match &t.node.kind {
                        TypeKind::Scalar => Kind::Scalar,
                        TypeKind::Object(o) => {
                            for i in &o.implements {
                                implementers.entry(i.node.to_string()).or_default().push(name.clone());
                            }
                            Kind::Object(convert_fields(&o.fields))
                        }
                        TypeKind::Interface(i) => {
                            Kind::Abstract { possible: Vec::new(), fields: convert_fields(&i.fields) }
                        }
                        TypeKind::Union(u) => Kind::Abstract {
                            possible: u.members.iter().map(|m| m.node.to_string()).collect(),
                            fields: Vec::new(),
                        },
                        TypeKind::Enum(e) => {
                            Kind::Enum(e.values.iter().map(|v| v.node.value.node.to_string()).collect())
                        }
                        TypeKind::InputObject(i) => Kind::Input(convert_args(&i.fields)),
                    };
                    types.insert(name, kind);
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        for (interface, objects) in implementers {
            if let Some(Kind::Abstract { possible, .. }) = types.get_mut(&interface) {
                possible.extend(objects);
            }
        }
        for scalar in ["String", "Int", "Float", "Boolean", "ID"] {
            types.entry(scalar.to_string()).or_insert(Kind::Scalar);
        }
        let query = query.unwrap_or_else(|| "Query".to_string());
        if !matches!(types.get(&query), Some(Kind::Object(_))) {
            return Err(anyhow!("schema.graphql has no query type `{query}`"));
        }
        let present = |name: Option<String>, default: &str| {
            let name = name.unwrap_or_else(|| default.to_string());
            types.contains_key(&name).then_some(name)
        };
        let mutation = present(mutation, "Mutation");
        let subscription = present(subscription, "Subscription");
        Ok(Self { types, query, mutation, subscription })
    }

    fn fields(&self, ty: &str) -> &[Field] {
        match self.types.get(ty) {
            Some(Kind::Object(f)) | Some(Kind::Abstract { fields: f, .. }) => f,
            _ => &[],
        }
    }

    fn is_composite(&self, ty: &str) -> bool {
        matches!(self.types.get(ty), Some(Kind::Object(_) | Kind::Abstract { .. }))
    }

    /// The root type of an operation kind.
    fn root(&self, op: OpKind) -> Option<&str> {
        match op {
            OpKind::Query => Some(&self.query),
            OpKind::Mutation => self.mutation.as_deref(),
            OpKind::Subscription => self.subscription.as_deref(),
        }
    }
}

/// The named type under lists and non-null.
pub fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(n) => n.as_str(),
        BaseType::List(inner) => named(inner),
    }
}

/// Strings that have broken servers before: empty, unicode, control characters,
/// injection attempts, numbers in strings, very long.
const NASTY_STRINGS: &[&str] = &[
    "",
    " ",
    "a",
    "null",
    "undefined",
    "0",
    "-1",
    "1e309",
    "NaN",
    "true",
    "\u{0}",
    "\u{0}\u{1}\u{7f}",
    "\u{202e}reversed",
    "𝕳𝖊𝖑𝖑𝖔 🎬",
    "\u{fffd}\u{feff}",
    "'; DROP TABLE users; --",
    "\" OR 1=1 --",
    "../../../../etc/passwd",
    "..%2f..%2f",
    "%00",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "a@b",
    "user@example.com",
    "http://127.0.0.1:1/",
    "file:///etc/passwd",
    "rh_live_0000",
    "Bearer x",
    "2026-13-45T99:99:99Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
];

const INTS: &[i64] = &[0, 1, -1, 2, 10, 100, 1000, i32::MAX as i64, i32::MIN as i64, 2147483648, -2147483649, 1 << 53];
const FLOATS: &[f64] = &[0.0, -0.0, 1.5, -1.0, 1e308, -1e308, 1e-308, 3600.0, 86400.0 * 365.0];

/// One value for a string-like position.
fn random_string(rng: &mut impl Rng, known: &Known) -> String {
    match rng.gen_range(0..10) {
        0..=3 => (*NASTY_STRINGS.choose(rng).unwrap_or(&"")).to_string(),
        4 | 5 => {
            let len = rng.gen_range(1..40);
            (0..len).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
        }
        6 => known.ids.choose(rng).cloned().unwrap_or_default(),
        7 => known.cursors.choose(rng).cloned().unwrap_or_else(|| "MTIz".to_string()),
        8 => {
            // Arbitrary unicode scalar values.
            let len = rng.gen_range(1..20);
            (0..len).filter_map(|_| char::from_u32(rng.gen_range(0..0x11_0000))).collect()
        }
        _ => "x".repeat(rng.gen_range(100..5000)),
    }
}

fn random_id(rng: &mut impl Rng, known: &Known) -> String {
    match rng.gen_range(0..6) {
        0..=2 => known.ids.choose(rng).cloned().unwrap_or_else(|| uuid::Uuid::from_u128(rng.gen()).to_string()),
        3 => uuid::Uuid::from_u128(rng.gen()).to_string(),
        _ => random_string(rng, known),
    }
}

/// A JSON value of `ty` (mostly valid for it; `wrong` asks for a value of the wrong type).
pub fn value_of(schema: &Schema, rng: &mut impl Rng, known: &Known, ty: &Type, depth: u32, wrong: bool) -> Value {
    if wrong {
        return wrong_value(rng);
    }
    if ty.nullable && rng.gen_bool(0.1) {
        return Value::Null;
    }
    match &ty.base {
        BaseType::List(inner) => {
            let n = if depth > 4 { 0 } else { rng.gen_range(0..4) };
            Value::Array((0..n).map(|_| value_of(schema, rng, known, inner, depth + 1, false)).collect())
        }
        BaseType::Named(name) => named_value(schema, rng, known, name.as_str(), depth),
    }
}

fn named_value(schema: &Schema, rng: &mut impl Rng, known: &Known, name: &str, depth: u32) -> Value {
    match name {
        "Int" => json!(INTS.choose(rng).copied().unwrap_or(0).clamp(i32::MIN as i64, i32::MAX as i64)),
        "Float" => json!(FLOATS.choose(rng).copied().unwrap_or(0.0)),
        "Boolean" => json!(rng.gen_bool(0.5)),
        "ID" => json!(random_id(rng, known)),
        "DateTime" => json!(match rng.gen_range(0..3) {
            0 => "2026-01-01T00:00:00Z".to_string(),
            1 => "2026-12-06T18:00:00.123456+01:00".to_string(),
            _ => random_string(rng, known),
        }),
        "Date" => json!(match rng.gen_range(0..3) {
            0 => "2026-01-01".to_string(),
            1 => "1900-02-29".to_string(),
            _ => random_string(rng, known),
        }),
        _ => match schema.types.get(name) {
            Some(Kind::Enum(values)) => json!(values.choose(rng).cloned().unwrap_or_default()),
            Some(Kind::Input(fields)) => {
                let mut object = Map::new();
                for f in fields {
                    let required = !f.ty.nullable && !f.has_default;
                    if required || (depth < 6 && rng.gen_bool(0.5)) {
                        object.insert(f.name.clone(), value_of(schema, rng, known, &f.ty, depth + 1, false));
                    }
                }
                Value::Object(object)
            }
            _ => json!(random_string(rng, known)),
        },
    }
}

/// A value of some other type than the position wants.
fn wrong_value(rng: &mut impl Rng) -> Value {
    match rng.gen_range(0..8) {
        0 => json!(rng.gen::<i64>()),
        1 => json!(rng.gen::<f64>() * 1e300),
        2 => json!(true),
        3 => json!({ "nested": { "deeper": [1, 2, 3] } }),
        4 => json!([[[[[]]]]]),
        5 => json!("not what you wanted"),
        6 => json!(u64::MAX),
        _ => Value::Null,
    }
}

/// A JSON value written as a GraphQL literal (enum values bare when `enum_like`).
fn literal(value: &Value, schema: &Schema, ty: Option<&Type>) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let is_enum = ty.is_some_and(|t| matches!(schema.types.get(named(t)), Some(Kind::Enum(_))));
            if is_enum && !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
            }
        }
        Value::Array(items) => {
            let inner = ty.and_then(|t| match &t.base {
                BaseType::List(inner) => Some(inner.as_ref()),
                BaseType::Named(_) => None,
            });
            let items: Vec<String> = items.iter().map(|v| literal(v, schema, inner)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let fields = ty.and_then(|t| match schema.types.get(named(t)) {
                Some(Kind::Input(fields)) => Some(fields),
                _ => None,
            });
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    let fty = fields.and_then(|fs| fs.iter().find(|f| &f.name == k)).map(|f| &f.ty);
                    format!("{k}: {}", literal(v, schema, fty))
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Builds one operation: a selection over a root type with arguments either inline
/// or as variables.
struct Builder<'a, R: Rng> {
    schema: &'a Schema,
    rng: &'a mut R,
    known: &'a Known,
    var_defs: Vec<String>,
    variables: Map<String, Value>,
    fragments: Vec<String>,
    /// Chance of each kind of mistake (0 for a valid document).
    mistakes: f64,
}

impl<R: Rng> Builder<'_, R> {
    fn args(&mut self, args: &[Arg]) -> String {
        let mut out = Vec::new();
        for arg in args {
            let required = !arg.ty.nullable && !arg.has_default;
            if required && self.rng.gen_bool(self.mistakes * 0.5) {
                continue; // a missing required argument
            }
            if !required && !self.rng.gen_bool(0.4) {
                continue;
            }
            let wrong = self.rng.gen_bool(self.mistakes * 0.5);
            let value = value_of(self.schema, self.rng, self.known, &arg.ty, 0, wrong);
            if self.rng.gen_bool(0.4) {
                let var = format!("v{}", self.var_defs.len());
                self.var_defs.push(format!("${var}: {}", arg.ty));
                self.variables.insert(var.clone(), value);
                out.push(format!("{}: ${var}", arg.name));
            } else {
                out.push(format!("{}: {}", arg.name, literal(&value, self.schema, Some(&arg.ty))));
            }
        }
        if self.rng.gen_bool(self.mistakes * 0.3) {
            out.push(format!("bogus{}: 1", self.rng.gen_range(0..100)));
        }
        if out.is_empty() {
            String::new()
        } else {
            format!("({})", out.join(", "))
        }
    }

    fn selection(&mut self, ty: &str, depth: u32, max_depth: u32) -> String {
        let fields: Vec<Field> = self.schema.fields(ty).to_vec();
        let mut parts = Vec::new();
        if self.rng.gen_bool(0.2) || fields.is_empty() {
            parts.push("__typename".to_string());
        }
        let n = self.rng.gen_range(1..=4.min(fields.len().max(1)));
        for field in fields.choose_multiple(self.rng, n) {
            let target = named(&field.ty).to_string();
            let composite = self.schema.is_composite(&target);
            if composite && depth >= max_depth {
                continue;
            }
            let mut text = String::new();
            if self.rng.gen_bool(0.15) {
                let _ = write!(text, "a{}: ", self.rng.gen_range(0..1000));
            }
            text.push_str(&field.name);
            text.push_str(&self.args(&field.args));
            if self.rng.gen_bool(0.05) {
                let _ = write!(
                    text,
                    " @{}(if: {})",
                    if self.rng.gen() { "skip" } else { "include" },
                    self.rng.gen::<bool>()
                );
            }
            if composite {
                let inner = self.composite_selection(&target, depth + 1, max_depth);
                let _ = write!(text, " {{ {inner} }}");
            }
            parts.push(text);
        }
        if self.rng.gen_bool(self.mistakes * 0.3) {
            parts.push(format!("noSuchField{}", self.rng.gen_range(0..100)));
        }
        if parts.is_empty() {
            parts.push("__typename".to_string());
        }
        parts.join(" ")
    }

    /// The selection of a composite type: its fields, inline fragments on what may
    /// stand for it, or a named fragment.
    fn composite_selection(&mut self, ty: &str, depth: u32, max_depth: u32) -> String {
        if let Some(Kind::Abstract { possible, .. }) = self.schema.types.get(ty) {
            let possible = possible.clone();
            let mut out = self.selection(ty, depth, max_depth);
            for member in possible.choose_multiple(self.rng, 2) {
                let inner = self.selection(member, depth, max_depth);
                let _ = write!(out, " ... on {member} {{ {inner} }}");
            }
            return out;
        }
        if self.rng.gen_bool(0.1) {
            // Reserve the name first: the selection may define fragments of its own.
            let slot = self.fragments.len();
            let name = format!("F{slot}");
            self.fragments.push(String::new());
            let inner = self.selection(ty, depth, max_depth);
            self.fragments[slot] = format!("fragment {name} on {ty} {{ {inner} }}");
            return format!("...{name}");
        }
        self.selection(ty, depth, max_depth)
    }
}

/// A valid-looking operation of `op` (with `mistakes` > 0, a mutated one).
fn operation(schema: &Schema, rng: &mut impl Rng, known: &Known, op: OpKind, mistakes: f64) -> Option<(String, Value)> {
    let root = schema.root(op)?.to_string();
    let max_depth = rng.gen_range(1..5);
    let mut b =
        Builder { schema, rng, known, var_defs: Vec::new(), variables: Map::new(), fragments: Vec::new(), mistakes };
    let body = if op == OpKind::Subscription {
        // One root field per subscription (the spec's rule).
        let fields = schema.fields(&root).to_vec();
        let field = fields.choose(b.rng)?.clone();
        let args = b.args(&field.args);
        let target = named(&field.ty).to_string();
        if schema.is_composite(&target) {
            let inner = b.composite_selection(&target, 1, max_depth);
            format!("{}{args} {{ {inner} }}", field.name)
        } else {
            format!("{}{args}", field.name)
        }
    } else {
        b.selection(&root, 0, max_depth)
    };
    let keyword = match op {
        OpKind::Query => "query",
        OpKind::Mutation => "mutation",
        OpKind::Subscription => "subscription",
    };
    let vars = if b.var_defs.is_empty() { String::new() } else { format!("({})", b.var_defs.join(", ")) };
    let name = format!("Fuzz{}", b.rng.gen_range(0..1_000_000));
    let mut doc = format!("{keyword} {name}{vars} {{ {body} }}");
    for fragment in &b.fragments {
        doc.push('\n');
        doc.push_str(fragment);
    }
    Some((doc, Value::Object(b.variables)))
}

/// Break a document's syntax in one of many ways.
fn break_syntax(rng: &mut impl Rng, doc: &str) -> String {
    let chars: Vec<char> = doc.chars().collect();
    let at = rng.gen_range(0..=chars.len());
    let (head, tail): (String, String) = (chars[..at].iter().collect(), chars[at..].iter().collect());
    match rng.gen_range(0..9) {
        0 => head,                                  // truncated
        1 => format!("{head}}}}}{tail}"),           // unbalanced braces
        2 => format!("{head}{{{tail}"),             // an opening brace too many
        3 => format!("{head}\"unterminated{tail}"), // an open string
        4 => format!("{head}$undefinedVar{tail}"),
        5 => format!("{head}...UndefinedFragment{tail}"),
        6 => format!("{head}@unknownDirective{tail}"),
        7 => format!("{doc}\n{doc}"), // the same operation name twice
        _ => {
            let junk: String =
                (0..rng.gen_range(1..10)).filter_map(|_| char::from_u32(rng.gen_range(0..0x800))).collect();
            format!("{head}{junk}{tail}")
        }
    }
}

/// Documents too big or too deep for any honest client.
fn oversized(schema: &Schema, rng: &mut impl Rng, known: &Known) -> (String, Value) {
    match rng.gen_range(0..9) {
        0 => {
            // Many aliases.
            let n = rng.gen_range(100..3000);
            let body: String = (0..n).map(|i| format!("a{i}: __typename ")).collect();
            (format!("{{ {body} }}"), json!({}))
        }
        1 => {
            // Many fragments, each spread.
            let n = rng.gen_range(50..1500);
            let defs: String =
                (0..n).map(|i| format!("fragment F{i} on {} {{ __typename }}\n", schema.query)).collect();
            let spreads: String = (0..n).map(|i| format!("...F{i} ")).collect();
            (format!("query {{ {spreads} }}\n{defs}"), json!({}))
        }
        2 => {
            // Fragments spreading each other in a cycle.
            let n = rng.gen_range(2..50);
            let defs: String = (0..n)
                .map(|i| format!("fragment C{i} on {} {{ __typename ...C{} }}\n", schema.query, (i + 1) % n))
                .collect();
            (format!("query {{ ...C0 }}\n{defs}"), json!({}))
        }
        3 => {
            // Deep nesting through an introspection cycle.
            let depth = rng.gen_range(20..400);
            let open = "ofType { ".repeat(depth);
            let close = "} ".repeat(depth);
            (format!("{{ __type(name: \"Query\") {{ {open} name {close} }} }}"), json!({}))
        }
        4 => {
            // Deep selection sets of nothing in particular (the parser's recursion).
            let depth = rng.gen_range(50..5000);
            (format!("{}{}", "{ a ".repeat(depth), "}".repeat(depth)), json!({}))
        }
        5 => {
            // A huge string argument, inline or as a variable.
            let size = rng.gen_range(10_000..3_000_000);
            let big = "A".repeat(size);
            if rng.gen() {
                ("query($s: String!) { __type(name: $s) { name } }".to_string(), json!({ "s": big }))
            } else {
                (format!("{{ __type(name: \"{big}\") {{ name }} }}"), json!({}))
            }
        }
        6 => {
            // Deeply nested list or object in a variable.
            let depth = rng.gen_range(50..3000);
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let value: Value = serde_json::from_str(&nested).unwrap_or(Value::Null);
            ("query($v: [Int]) { __typename }".to_string(), json!({ "v": value }))
        }
        7 => {
            // Many directives.
            let n = rng.gen_range(20..2000);
            let dirs = "@skip(if: false) ".repeat(n);
            (format!("{{ __typename {dirs} }}"), json!({}))
        }
        _ => {
            // A valid operation repeated under many aliases.
            let (doc, vars) = operation(schema, rng, known, OpKind::Query, 0.0).unwrap_or_default();
            let n = rng.gen_range(20..200);
            let inner = doc.split_once('{').map(|(_, rest)| rest.trim_end().trim_end_matches('}')).unwrap_or("");
            let body: String = (0..n).map(|i| format!("x{i}: __schema {{ queryType {{ name }} }} {inner} ")).collect();
            (format!("query {{ {body} }}"), vars)
        }
    }
}

/// Bytes that are not a GraphQL request: random, broken JSON, wrong shapes.
fn raw_body(rng: &mut impl Rng) -> Vec<u8> {
    match rng.gen_range(0..12) {
        0 => (0..rng.gen_range(0..2000)).map(|_| rng.gen()).collect(),
        1 => b"{\"query\": \"{ __typename }\"".to_vec(),
        2 => b"{\"query\": 42}".to_vec(),
        3 => b"{\"query\": \"{ __typename }\", \"variables\": \"not an object\"}".to_vec(),
        4 => b"[]".to_vec(),
        5 => b"[{\"query\": \"{ __typename }\"}, 1, null, {}]".to_vec(),
        6 => b"null".to_vec(),
        7 => format!("{}{}", "[".repeat(rng.gen_range(100..100_000)), "]".repeat(rng.gen_range(0..10))).into_bytes(),
        8 => b"{\"query\": \"{ __typename }\", \"operationName\": 7, \"extensions\": []}".to_vec(),
        9 => b"\xef\xbb\xbf{\"query\": \"{ __typename }\"}".to_vec(),
        10 => {
            let batch: Vec<Value> = (0..rng.gen_range(2..300)).map(|_| json!({ "query": "{ __typename }" })).collect();
            serde_json::to_vec(&batch).unwrap_or_default()
        }
        _ => b"{\"query\": \"\\ud800\"}".to_vec(),
    }
}

/// One request of the mix: mostly valid operations (queries, mutations,
/// subscriptions), then mutated, oversized and raw ones.
pub fn generate(schema: &Schema, rng: &mut impl Rng, known: &Known) -> Generated {
    let pick_op = |rng: &mut dyn rand::RngCore| match rng.gen_range(0..10) {
        0..=4 => OpKind::Query,
        5..=7 => OpKind::Mutation,
        _ => OpKind::Subscription,
    };
    let roll = rng.gen_range(0..100);
    let (class, query, variables, raw, operation_kind) = match roll {
        0..=44 => {
            let op = pick_op(rng);
            match operation(schema, rng, known, op, 0.0) {
                Some((q, v)) => ("valid", Some(q), v, None, op),
                None => ("valid", Some("{ __typename }".to_string()), json!({}), None, OpKind::Query),
            }
        }
        45..=69 => {
            let op = pick_op(rng);
            let (q, v) = operation(schema, rng, known, op, 0.5).unwrap_or_default();
            ("mutated", Some(q), v, None, op)
        }
        70..=79 => {
            let op = pick_op(rng);
            let (q, v) = operation(schema, rng, known, op, 0.0).unwrap_or_default();
            ("broken", Some(break_syntax(rng, &q)), v, None, op)
        }
        80..=91 => {
            let (q, v) = oversized(schema, rng, known);
            ("oversized", Some(q), v, None, OpKind::Query)
        }
        _ => ("raw", None, json!({}), Some(raw_body(rng)), OpKind::Query),
    };
    Generated { class, query, variables, raw, operation: operation_kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn schema() -> Schema {
        let sdl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql")).unwrap();
        Schema::parse(&sdl).unwrap()
    }

    #[test]
    fn valid_documents_parse_as_graphql() {
        let schema = schema();
        let known = Known { ids: vec![uuid::Uuid::new_v4().to_string()], cursors: vec![] };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for op in [OpKind::Query, OpKind::Mutation, OpKind::Subscription] {
            for _ in 0..300 {
                let (doc, _) = operation(&schema, &mut rng, &known, op, 0.0).unwrap();
                async_graphql_parser::parse_query(&doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
            }
        }
    }

    #[test]
    fn the_same_seed_makes_the_same_document() {
        let schema = schema();
        let known = Known::default();
        let a = generate(&schema, &mut rand::rngs::StdRng::seed_from_u64(42), &known);
        let b = generate(&schema, &mut rand::rngs::StdRng::seed_from_u64(42), &known);
        assert_eq!(a.query, b.query);
        assert_eq!(a.raw, b.raw);
    }
}
