//! The query string of a REST request, as PostgREST 12.0.2 reads it, and the two changes the
//! router makes to it before passing it on:
//!
//! * every `apikey` parameter is taken out (it is a credential, not a column filter: PostgREST
//!   would echo it back in its "failed to parse filter" error) and returned to the caller;
//! * inside a logic tree, the API reference's spelling of a nested tree, `or=(…)` /
//!   `and=(…)` / `not.or=(…)` / `not.and=(…)`, becomes PostgREST's `or(…)`.
//!
//! The second change is made only where PostgREST's own grammar expects the start of a
//! condition, found by following that grammar (`pLogicTree` in PostgREST's `QueryParams.hs`):
//! there `or=(` can never parse, so the rewrite only turns a request PostgREST would refuse
//! into the one the reference means. Text inside values (quoted, `in.(…)` lists, `{…}` arrays,
//! plain values) is never touched. When a tree does not follow the grammar, its parameter is
//! passed on unchanged and PostgREST reports the error. Everything else passes byte for byte.
//!
//! PostgREST splits the query string on `&` and `;`, splits each part at its first raw `=`, and
//! percent-decodes names and values with `+` as a space (http-types' `parseQueryReplacePlus`);
//! so does this module. The decoded text is parsed, and the rewrite deletes the raw bytes of
//! the `=` it removes, whether it was sent as `=` or `%3D`.

/// A query string after the router's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedQuery {
    /// What PostgREST gets (without a leading `?`).
    pub query: String,
    /// The decoded values of the `apikey` parameters, in order (more than one is an error).
    pub api_keys: Vec<String>,
}

/// Applies the router's changes to a raw query string (without the leading `?`).
pub fn route(raw: &str) -> RoutedQuery {
    let mut kept: Vec<String> = Vec::new();
    let mut api_keys = Vec::new();
    for part in raw.split(['&', ';']) {
        let (raw_name, raw_value) = match part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (part, None),
        };
        let name = Decoded::new(raw_name).text.unwrap_or_default();
        if is_api_key_name(&name) {
            if let Some(v) = raw_value {
                api_keys.push(Decoded::new(v).text.unwrap_or_default());
            }
            continue;
        }
        let rewritten = raw_value.filter(|_| is_logic_param(&name)).and_then(|v| {
            let value = Decoded::new(v);
            let deletions = logic_tree_rewrites(value.text.as_deref()?);
            (!deletions.is_empty()).then(|| value.delete_raw(v, &deletions))
        });
        kept.push(match rewritten {
            Some(v) => format!("{raw_name}={v}"),
            None => part.to_owned(),
        });
    }
    // Separators are re-joined with `&`; PostgREST treats `;` the same way.
    RoutedQuery {
        query: kept.join("&"),
        api_keys,
    }
}

/// `apikey`, in any letter case: PostgREST would take `APIKEY=…` for a filter too.
fn is_api_key_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("apikey")
}

/// A logic-tree parameter: `or`, `and`, `not.or`, `child.not.and`, … (PostgREST: the name's
/// last `.`-separated word is `and` or `or`).
fn is_logic_param(name: &str) -> bool {
    matches!(name.rsplit('.').next(), Some("and" | "or"))
}

/// A percent-decoded query component, with the raw span of every decoded char. `text` is
/// `None` when the decoded bytes are not UTF-8 (PostgREST refuses those itself).
struct Decoded {
    text: Option<String>,
    /// For the i-th char of `text`: its byte range in the raw component.
    spans: Vec<(usize, usize)>,
}

impl Decoded {
    fn new(raw: &str) -> Decoded {
        let bytes = raw.as_bytes();
        let hex = |i: usize| bytes.get(i).and_then(|&b| (b as char).to_digit(16));
        let mut out = Vec::with_capacity(bytes.len());
        let mut byte_spans = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let (byte, width) = match (bytes[i], hex(i + 1), hex(i + 2)) {
                (b'+', _, _) => (b' ', 1),
                (b'%', Some(hi), Some(lo)) => ((hi << 4 | lo) as u8, 3),
                (b, _, _) => (b, 1),
            };
            out.push(byte);
            byte_spans.push((i, i + width));
            i += width;
        }
        match String::from_utf8(out) {
            Ok(text) => Decoded {
                spans: char_spans(&text, &byte_spans),
                text: Some(text),
            },
            Err(_) => Decoded {
                text: None,
                spans: Vec::new(),
            },
        }
    }

    /// The raw component with the raw bytes of the chars at `deletions` (ascending char
    /// indexes into `text`) removed.
    fn delete_raw(&self, raw: &str, deletions: &[usize]) -> String {
        let mut out = String::with_capacity(raw.len());
        let mut from = 0;
        for &d in deletions {
            let (start, end) = self.spans[d];
            out.push_str(&raw[from..start]);
            from = end;
        }
        out.push_str(&raw[from..]);
        out
    }
}

/// Raw spans per char, from raw spans per decoded byte.
fn char_spans(text: &str, byte_spans: &[(usize, usize)]) -> Vec<(usize, usize)> {
    text.char_indices()
        .map(|(at, c)| (byte_spans[at].0, byte_spans[at + c.len_utf8() - 1].1))
        .collect()
}

/// The char indexes of the `=` to delete in a logic tree's value, or none if the value does
/// not follow PostgREST's grammar (or needs no change).
fn logic_tree_rewrites(value: &str) -> Vec<usize> {
    let chars: Vec<char> = value.chars().collect();
    let mut parser = Parser {
        s: &chars,
        i: 0,
        deletions: Vec::new(),
    };
    match parser.tree_body() {
        Some(()) => parser.deletions,
        None => Vec::new(),
    }
}

/// A recursive-descent mirror of PostgREST 12.0.2's logic-tree grammar, over decoded chars.
/// Every method returns `None` where PostgREST's parser would fail.
struct Parser<'a> {
    s: &'a [char],
    i: usize,
    deletions: Vec<usize>,
}

const SIMPLE_OPERATORS: [&str; 9] = ["neq", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj"];
const QUANT_OPERATORS: [&str; 9] = [
    "eq", "gte", "gt", "lte", "lt", "like", "ilike", "match", "imatch",
];
const FTS_OPERATORS: [&str; 4] = ["fts", "plfts", "phfts", "wfts"];
const TRILEAN: [&str; 4] = ["null", "unknown", "true", "false"];

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.s.get(self.i + offset).copied()
    }

    fn eat(&mut self, c: char) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    fn eat_str(&mut self, word: &str) -> bool {
        let n = word.chars().count();
        let matches =
            self.s.len() >= self.i + n && word.chars().zip(&self.s[self.i..]).all(|(a, &b)| a == b);
        if matches {
            self.i += n;
        }
        matches
    }

    fn eat_str_ci(&mut self, word: &str) -> bool {
        let n = word.chars().count();
        let matches = self.s.len() >= self.i + n
            && word
                .chars()
                .zip(&self.s[self.i..])
                .all(|(a, &b)| a == b || a.to_ascii_uppercase() == b);
        if matches {
            self.i += n;
        }
        matches
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.i += 1;
        }
    }

    /// `( cond , cond … )` with optional blanks around the punctuation.
    fn tree_body(&mut self) -> Option<()> {
        self.ws();
        self.eat('(')?;
        self.ws();
        loop {
            self.condition()?;
            self.ws();
            match self.peek()? {
                ',' => {
                    self.i += 1;
                    self.ws();
                }
                ')' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A filter, else a nested tree (PostgREST tries them in that order).
    fn condition(&mut self) -> Option<()> {
        let start = self.i;
        let kept = self.deletions.len();
        if self.filter().is_some() {
            return Some(());
        }
        self.i = start;
        self.deletions.truncate(kept);
        self.eat_str("not.");
        if !(self.eat_str("and") || self.eat_str("or")) {
            return None;
        }
        if self.peek() == Some('=') {
            // The reference's `or=(`: PostgREST cannot parse it here, and means `or(`.
            self.deletions.push(self.i);
            self.i += 1;
        }
        self.tree_body()
    }

    /// `field[->json…] . [not.] operator value`
    fn filter(&mut self) -> Option<()> {
        self.ws();
        self.field_name()?;
        self.json_path();
        self.ws();
        self.eat('.')?;
        if self.eat_str("not.") {
            // `not.` is optional; PostgREST tries it first.
        }
        self.operation()
    }

    fn operation(&mut self) -> Option<()> {
        if self.eat_str("in.") {
            return self.list_value();
        }
        let start = self.i;
        if self.eat_str("is.") {
            return TRILEAN.iter().any(|w| self.eat_str_ci(w)).then_some(());
        }
        self.i = start;
        if self.eat_str("isdistinct.") {
            return self.single_value();
        }
        for op in FTS_OPERATORS {
            self.i = start;
            if self.eat_str(op) {
                let before_lang = self.i;
                if !(self.eat('(').is_some()
                    && self.identifier().is_some()
                    && self.eat(')').is_some())
                {
                    self.i = before_lang;
                }
                if self.eat('.').is_some() {
                    return self.single_value();
                }
            }
        }
        for op in SIMPLE_OPERATORS {
            self.i = start;
            if self.eat_str(op) && self.eat('.').is_some() {
                return self.single_value();
            }
        }
        for op in QUANT_OPERATORS {
            self.i = start;
            if self.eat_str(op) {
                let before_quant = self.i;
                if !(self.eat_str("(any)") || self.eat_str("(all)")) {
                    self.i = before_quant;
                }
                if self.eat('.').is_some() {
                    return self.single_value();
                }
            }
        }
        None
    }

    /// PostgREST's `pLogicSingleVal`: a quoted value followed by `,` `)` or the end, else a
    /// `{…}` array, else everything up to `,` or `)`.
    fn single_value(&mut self) -> Option<()> {
        let start = self.i;
        if self.quoted().is_some() && matches!(self.peek(), None | Some(',' | ')')) {
            return Some(());
        }
        self.i = start;
        if self.eat('{').is_some() {
            while let Some(c) = self.peek() {
                match c {
                    '}' => {
                        self.i += 1;
                        return Some(());
                    }
                    '{' => break,
                    _ => self.i += 1,
                }
            }
            self.i = start;
        }
        self.plain_value();
        Some(())
    }

    /// `( elem , elem … )`: PostgREST's `pListVal`.
    fn list_value(&mut self) -> Option<()> {
        self.ws();
        self.eat('(')?;
        self.ws();
        loop {
            let start = self.i;
            if !(self.quoted().is_some() && matches!(self.peek(), Some(',' | ')'))) {
                self.i = start;
                self.plain_value();
            }
            match self.peek()? {
                ',' => self.i += 1,
                ')' => {
                    self.i += 1;
                    self.ws();
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn plain_value(&mut self) {
        while !matches!(self.peek(), None | Some(',' | ')')) {
            self.i += 1;
        }
    }

    /// `"…"` with `\` escaping the next char.
    fn quoted(&mut self) -> Option<()> {
        self.eat('"')?;
        loop {
            match self.peek()? {
                '"' => {
                    self.i += 1;
                    return Some(());
                }
                '\\' => {
                    self.peek_at(1)?;
                    self.i += 2;
                }
                _ => self.i += 1,
            }
        }
    }

    /// A quoted name, or identifiers joined by `-` (a `-` before `>` starts a JSON arrow).
    fn field_name(&mut self) -> Option<()> {
        if self.peek() == Some('"') {
            return self.quoted();
        }
        self.dashed(Self::identifier)
    }

    fn dashed(&mut self, part: fn(&mut Self) -> Option<()>) -> Option<()> {
        part(self)?;
        while self.peek() == Some('-') && self.peek_at(1) != Some('>') {
            self.i += 1;
            part(self)?;
        }
        Some(())
    }

    fn identifier(&mut self) -> Option<()> {
        let start = self.i;
        while self.peek().is_some_and(|c| {
            c.is_alphabetic() || c.is_ascii_digit() || matches!(c, '_' | ' ' | '$')
        }) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// `->key`, `->>key`, `->0`, … (PostgREST's `pJsonPath`), as many as there are.
    fn json_path(&mut self) {
        loop {
            let start = self.i;
            if !(self.eat_str("->>") || self.eat_str("->")) {
                return;
            }
            if !(self.json_index() || self.json_key()) {
                self.i = start;
                return;
            }
        }
    }

    /// `-?digits` followed by `->`, `::`, `.`, `,` or the end.
    fn json_index(&mut self) -> bool {
        let start = self.i;
        if self.peek() == Some('-') {
            self.i += 1;
        }
        let digits = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let ends = matches!(self.peek(), None | Some('.' | ','))
            || (self.peek() == Some('-') && self.peek_at(1) == Some('>'))
            || (self.peek() == Some(':') && self.peek_at(1) == Some(':'));
        if self.i > digits && ends {
            true
        } else {
            self.i = start;
            false
        }
    }

    fn json_key(&mut self) -> bool {
        let start = self.i;
        let parsed = if self.peek() == Some('"') {
            self.quoted()
        } else {
            self.dashed(|p| {
                let from = p.i;
                while p.peek().is_some_and(|c| !"(-:.,>)".contains(c)) {
                    p.i += 1;
                }
                (p.i > from).then_some(())
            })
        };
        if parsed.is_none() {
            self.i = start;
        }
        parsed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(raw: &str) -> String {
        route(raw).query
    }

    #[test]
    fn rewrites_the_references_nested_spelling() {
        assert_eq!(
            query("and=(device_id.eq.X,or=(soe.lt.20,soe.gt.80))"),
            "and=(device_id.eq.X,or(soe.lt.20,soe.gt.80))"
        );
        assert_eq!(
            query("or=(a.eq.1,and=(b.eq.2,not.or=(c.eq.3,d.eq.4)))&select=*"),
            "or=(a.eq.1,and(b.eq.2,not.or(c.eq.3,d.eq.4)))&select=*"
        );
        // Percent-encoded, in any part.
        assert_eq!(
            query("and=%28device_id.eq.X%2Cor%3D%28soe.lt.20%2Csoe.gt.80%29%29"),
            "and=%28device_id.eq.X%2Cor%28soe.lt.20%2Csoe.gt.80%29%29"
        );
        assert_eq!(
            query("child.not.and=(a.eq.1,or=(b.eq.2))"),
            "child.not.and=(a.eq.1,or(b.eq.2))"
        );
        // Blanks around the punctuation, as PostgREST allows them.
        assert_eq!(
            query("or=( a.eq.1 , and=( b.eq.2 ) )"),
            "or=( a.eq.1 , and( b.eq.2 ) )"
        );
        assert_eq!(
            query("or=(a.eq.1,and=+(b.eq.2))"),
            "or=(a.eq.1,and+(b.eq.2))"
        );
    }

    #[test]
    fn postgrests_own_spelling_and_other_parameters_pass_unchanged() {
        for raw in [
            "and=(device_id.eq.X,or(soe.lt.20,soe.gt.80))",
            "or=(a.eq.1,b.eq.2)",
            "select=id,time&order=time.desc&limit=100",
            "time=gte.2024-01-01T00:00:00Z&time=lt.2024-01-02T00:00:00Z",
            "name=like.*,or=(*",
            "select=*,device:mg_device_registry(name)",
            "",
            "&&x",
        ] {
            assert_eq!(query(raw), raw, "{raw}");
        }
    }

    #[test]
    fn text_inside_values_is_never_rewritten() {
        for raw in [
            // Quoted values, lists and arrays may hold anything.
            r#"or=(name.eq."x,or=(y",b.eq.1)"#,
            r#"or=(name.eq."a\",or=(b",b.eq.1)"#,
            "or=(id.in.(1,or=(2),b.eq.1)",
            "or=(tags.cs.{a,or=(b},b.eq.1)",
            // A plain value runs to the next `,` or `)`.
            "or=(name.like.x(and=(y,b.eq.1)",
            // A tree that does not parse is left to PostgREST.
            "or=(a.eq.1,or=(b.eq.2)",
            "or=(a.zz.1,or=(b.eq.2))",
        ] {
            assert_eq!(query(raw), raw, "{raw}");
        }
        // And a valid tree after such values is still rewritten where it should be.
        assert_eq!(
            query(r#"or=(name.eq."x,or=(y",and=(b.eq.1))"#),
            r#"or=(name.eq."x,or=(y",and(b.eq.1))"#
        );
        assert_eq!(
            query(r#"or=(id.in.(1,"or=(2)"),tags.cs.{or=(},and=(b.eq.1))"#),
            r#"or=(id.in.(1,"or=(2)"),tags.cs.{or=(},and(b.eq.1))"#
        );
        // PostgREST stops reading a tree at the `)` that closes it, as this does.
        assert_eq!(
            query("or=(id.in.(1,or=(2)),and=(b.eq.1))"),
            "or=(id.in.(1,or=(2)),and=(b.eq.1))"
        );
    }

    #[test]
    fn operators_json_paths_and_quoted_fields() {
        assert_eq!(
            query(
                r#"or=(metadata->>site.eq.WLCE,"odd name".is.NULL,x->0.gt.1,t.fts(english).cat,n.gte(any).{1,2},and=(a.not.eq.1))"#
            ),
            r#"or=(metadata->>site.eq.WLCE,"odd name".is.NULL,x->0.gt.1,t.fts(english).cat,n.gte(any).{1,2},and(a.not.eq.1))"#
        );
    }

    #[test]
    fn every_api_key_is_taken_out() {
        let r = route("apikey=K1&select=*&APIKEY=K2&api%6Bey=K3;ApiKey=K%204&apikeys=x");
        assert_eq!(r.query, "select=*&apikeys=x");
        assert_eq!(r.api_keys, ["K1", "K2", "K3", "K 4"]);
        let r = route("apikey=abc.def");
        assert_eq!(r.query, "");
        assert_eq!(r.api_keys, ["abc.def"]);
        assert!(route("select=*").api_keys.is_empty());
    }

    #[test]
    fn malformed_percent_encoding_passes_through() {
        for raw in [
            "or=(a.eq.%ZZ,b.eq.1)",
            "x=%",
            "x=%4",
            "or=(a.eq.%FF%FE,or=(b.eq.1))",
        ] {
            assert_eq!(query(raw), raw, "{raw}");
        }
        assert_eq!(
            query("or=(a.eq.%ZZ,or=(b.eq.1))"),
            "or=(a.eq.%ZZ,or(b.eq.1))"
        );
    }

    /// Random logic trees in PostgREST's grammar, with values that hold the grammar's own
    /// punctuation, rendered in PostgREST's spelling and in the reference's.
    mod trees {
        use super::route;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Cond {
            Filter(String),
            Tree {
                not: bool,
                and: bool,
                conds: Vec<Cond>,
            },
        }

        fn render(cond: &Cond, reference: bool) -> String {
            match cond {
                Cond::Filter(f) => f.clone(),
                Cond::Tree { not, and, conds } => format!(
                    "{}{}{}({})",
                    if *not { "not." } else { "" },
                    if *and { "and" } else { "or" },
                    if reference { "=" } else { "" },
                    conds
                        .iter()
                        .map(|c| render(c, reference))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            }
        }

        /// Text from an alphabet rich in the grammar's punctuation.
        fn text(exclude: &'static str) -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop::sample::select(vec![
                    'a', 'b', 'o', 'r', 'n', 'd', '.', ',', '(', ')', '=', '"', '\\', '{', '}',
                    ' ', '&', ';', '%', '+', '#', 'é', '-', '>',
                ]),
                0..8,
            )
            .prop_map(move |cs| cs.into_iter().filter(|c| !exclude.contains(*c)).collect())
        }

        fn quoted() -> impl Strategy<Value = String> {
            text("").prop_map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                quoted(),
                text("{}").prop_map(|t| format!("{{{t}}}")),
                // A plain value: anything up to `,` or `)`, not starting like the others.
                text(",)\"{").prop_map(|t| format!("x{t}")),
            ]
        }

        fn list() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![quoted(), text(",)\"").prop_map(|t| format!("x{t}"))],
                1..4,
            )
            .prop_map(|elems| format!("({})", elems.join(",")))
        }

        fn filter() -> impl Strategy<Value = Cond> {
            let field = prop_oneof![
                Just("device_id".to_owned()),
                Just("or".to_owned()),
                Just("and".to_owned()),
                Just("not".to_owned()),
                Just("metadata->>site".to_owned()),
                Just("metadata->0".to_owned()),
                quoted(),
            ];
            let op = prop_oneof![
                (
                    prop::sample::select(vec![
                        "eq", "neq", "lt", "gte", "like", "ilike", "cs", "imatch", "gt(any)"
                    ]),
                    value()
                )
                    .prop_map(|(op, v)| format!("{op}.{v}")),
                list().prop_map(|l| format!("in.{l}")),
                prop::sample::select(vec!["is.null", "is.TRUE", "is.unknown"])
                    .prop_map(str::to_owned),
                value().prop_map(|v| format!("fts(english).{v}")),
            ];
            (field, any::<bool>(), op).prop_map(|(field, not, op)| {
                Cond::Filter(format!("{field}.{}{op}", if not { "not." } else { "" }))
            })
        }

        fn tree() -> impl Strategy<Value = Cond> {
            filter().prop_recursive(4, 24, 4, |inner| {
                (
                    any::<bool>(),
                    any::<bool>(),
                    proptest::collection::vec(inner, 1..4),
                )
                    .prop_map(|(not, and, conds)| Cond::Tree { not, and, conds })
            })
        }

        /// Percent-encodes what a query string cannot carry raw, and other chars at random.
        fn encode(text: &str, mask: &[bool]) -> String {
            text.chars()
                .enumerate()
                .map(|(i, c)| {
                    let must = "&;%+# ".contains(c) || !c.is_ascii();
                    if must || mask.get(i % mask.len().max(1)).copied().unwrap_or(false) {
                        if c == ' ' && !mask.first().copied().unwrap_or(false) {
                            return "+".to_owned();
                        }
                        let mut buf = [0; 4];
                        c.encode_utf8(&mut buf)
                            .bytes()
                            .map(|b| format!("%{b:02X}"))
                            .collect()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        }

        fn decode(raw: &str) -> String {
            super::Decoded::new(raw).text.unwrap()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn postgrest_spelling_passes_and_reference_spelling_becomes_it(
                conds in proptest::collection::vec(tree(), 1..4),
                not in any::<bool>(),
                mask in proptest::collection::vec(any::<bool>(), 1..7),
            ) {
                let name = if not { "not.or" } else { "or" };
                let postgrest = format!("({})", conds.iter().map(|c| render(c, false)).collect::<Vec<_>>().join(","));
                let reference = format!("({})", conds.iter().map(|c| render(c, true)).collect::<Vec<_>>().join(","));
                let plain = format!("{name}={}", encode(&postgrest, &[false]));
                prop_assert_eq!(route(&plain).query, plain.clone());
                let encoded = format!("{name}={}", encode(&postgrest, &mask));
                prop_assert_eq!(route(&encoded).query, encoded.clone());
                let routed = route(&format!("{name}={}", encode(&reference, &mask))).query;
                let (_, value) = routed.split_once('=').unwrap();
                prop_assert_eq!(decode(value), postgrest);
            }
        }
    }
}
