//! Expansion of istiod's benchmark configs (`pilot/pkg/xds/testdata/benchmarks/*.yaml`), which
//! are Go `text/template`s. Only what those files use is supported: `range $v := until N`,
//! `end`, variables (`$i`), fields (`.Services`, `$.Instances`), integer literals, `div`, `mod`,
//! `add`, `sub`, `mul`, and the `{{-` / `-}}` whitespace trimming. Anything else is an error
//! naming the action. Output is bounded.

use std::collections::BTreeMap;

/// Largest expansion accepted.
pub const MAX_OUTPUT: usize = 512 * 1024 * 1024;
const MAX_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("template action {0:?}: {1}")]
    Action(String, String),
    #[error("template: unclosed action")]
    Unclosed,
    #[error("template: `range` without `end`")]
    MissingEnd,
    #[error("template: `end` without `range`")]
    StrayEnd,
    #[error("template: expansion larger than {MAX_OUTPUT} bytes")]
    TooLarge,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Expr(String),
    Range {
        var: String,
        count: String,
        body: Vec<Node>,
    },
}

/// Expands `text` with the given top-level fields (`.Services` → `fields["Services"]`).
pub fn expand(text: &str, fields: &BTreeMap<String, i64>) -> Result<String, TemplateError> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let nodes = parse(&tokens, &mut pos, 0)?;
    if pos != tokens.len() {
        return Err(TemplateError::StrayEnd);
    }
    let mut out = String::new();
    let mut vars = BTreeMap::new();
    render(&nodes, fields, &mut vars, &mut out)?;
    Ok(out)
}

#[derive(Debug)]
enum Token {
    Text(String),
    Action(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, TemplateError> {
    let mut tokens = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut before = &rest[..start];
        if trim_next {
            before = before.trim_start();
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix('-')
            && a.starts_with(char::is_whitespace)
        {
            before = before.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix('-')
            && a.ends_with(char::is_whitespace)
        {
            trim_next = true;
            action = a;
        }
        if !before.is_empty() {
            tokens.push(Token::Text(before.to_string()));
        }
        tokens.push(Token::Action(action.trim().to_string()));
        rest = &after[end + 2..];
    }
    let tail = if trim_next { rest.trim_start() } else { rest };
    if !tail.is_empty() {
        tokens.push(Token::Text(tail.to_string()));
    }
    Ok(tokens)
}

fn parse(tokens: &[Token], pos: &mut usize, depth: usize) -> Result<Vec<Node>, TemplateError> {
    let mut nodes = Vec::new();
    while *pos < tokens.len() {
        match &tokens[*pos] {
            Token::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                *pos += 1;
            }
            Token::Action(a) if a == "end" => {
                if depth == 0 {
                    return Err(TemplateError::StrayEnd);
                }
                return Ok(nodes);
            }
            Token::Action(a) => {
                *pos += 1;
                if let Some(rest) = a.strip_prefix("range ") {
                    if depth >= MAX_DEPTH {
                        return Err(TemplateError::Action(a.clone(), "nested too deeply".into()));
                    }
                    let (var, count) = parse_range(rest).ok_or_else(|| {
                        TemplateError::Action(a.clone(), "expected `range $v := until N`".into())
                    })?;
                    let body = parse(tokens, pos, depth + 1)?;
                    match tokens.get(*pos) {
                        Some(Token::Action(e)) if e == "end" => *pos += 1,
                        _ => return Err(TemplateError::MissingEnd),
                    }
                    nodes.push(Node::Range { var, count, body });
                } else if a.starts_with("/*") || a.is_empty() {
                    // A comment.
                } else {
                    nodes.push(Node::Expr(a.clone()));
                }
            }
        }
    }
    if depth > 0 {
        return Err(TemplateError::MissingEnd);
    }
    Ok(nodes)
}

fn parse_range(rest: &str) -> Option<(String, String)> {
    let (var, expr) = rest.split_once(":=")?;
    let var = var.trim();
    if !var.starts_with('$') {
        return None;
    }
    let count = expr.trim().strip_prefix("until ")?.trim();
    Some((var.to_string(), count.to_string()))
}

fn value(term: &str, fields: &BTreeMap<String, i64>, vars: &BTreeMap<String, i64>) -> Option<i64> {
    if let Some(f) = term.strip_prefix("$.").or_else(|| term.strip_prefix('.')) {
        return fields.get(f).copied();
    }
    if term.starts_with('$') {
        return vars.get(term).copied();
    }
    term.parse().ok()
}

fn eval(
    expr: &str,
    fields: &BTreeMap<String, i64>,
    vars: &BTreeMap<String, i64>,
) -> Result<i64, TemplateError> {
    let bad = |why: &str| TemplateError::Action(expr.to_string(), why.to_string());
    let words: Vec<&str> = expr.split_whitespace().collect();
    match words.as_slice() {
        [term] => value(term, fields, vars).ok_or_else(|| bad("unknown variable or field")),
        [op, a, b] => {
            let a = value(a, fields, vars).ok_or_else(|| bad("unknown operand"))?;
            let b = value(b, fields, vars).ok_or_else(|| bad("unknown operand"))?;
            match *op {
                "add" => a.checked_add(b),
                "sub" => a.checked_sub(b),
                "mul" => a.checked_mul(b),
                "div" => a.checked_div(b),
                "mod" => a.checked_rem(b),
                _ => return Err(bad("unsupported function")),
            }
            .ok_or_else(|| bad("arithmetic overflow or division by zero"))
        }
        _ => Err(bad("unsupported action")),
    }
}

fn render(
    nodes: &[Node],
    fields: &BTreeMap<String, i64>,
    vars: &mut BTreeMap<String, i64>,
    out: &mut String,
) -> Result<(), TemplateError> {
    for node in nodes {
        if out.len() > MAX_OUTPUT {
            return Err(TemplateError::TooLarge);
        }
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Expr(e) => out.push_str(&eval(e, fields, vars)?.to_string()),
            Node::Range { var, count, body } => {
                let n = eval(count, fields, vars)?;
                let saved = vars.get(var).copied();
                for i in 0..n.max(0) {
                    vars.insert(var.clone(), i);
                    render(body, fields, vars, out)?;
                    if out.len() > MAX_OUTPUT {
                        return Err(TemplateError::TooLarge);
                    }
                }
                match saved {
                    Some(v) => vars.insert(var.clone(), v),
                    None => vars.remove(var),
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(services: i64, instances: i64) -> BTreeMap<String, i64> {
        BTreeMap::from([
            ("Services".to_string(), services),
            ("Instances".to_string(), instances),
        ])
    }

    #[test]
    fn expands_ranges_and_arithmetic_with_trimming() {
        let t = "a: 1\n---\n{{- range $i := until .Services }}\nname: s-{{$i}} ip: {{div $i 2 }}.{{mod $i 2 }} of {{ $.Services }}\n---\n{{- end }}\n";
        let out = expand(t, &fields(3, 1)).unwrap();
        assert_eq!(
            out,
            "a: 1\n---\nname: s-0 ip: 0.0 of 3\n---\nname: s-1 ip: 0.1 of 3\n---\nname: s-2 ip: 1.0 of 3\n---\n"
        );
    }

    #[test]
    fn rejects_unsupported_actions() {
        assert!(matches!(
            expand("{{ printf \"%d\" 1 }}", &fields(1, 1)),
            Err(TemplateError::Action(..))
        ));
        assert_eq!(
            expand("{{ range $i := until 2 }}x", &fields(1, 1)),
            Err(TemplateError::MissingEnd)
        );
        assert_eq!(
            expand("x{{ end }}", &fields(1, 1)),
            Err(TemplateError::StrayEnd)
        );
        assert_eq!(
            expand("{{ .Services", &fields(1, 1)),
            Err(TemplateError::Unclosed)
        );
    }

    #[test]
    fn expands_every_istio_benchmark_file() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/istio/benchmarks");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return; // The shared corpus is not present in this checkout.
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let out = expand(&text, &fields(5, 3))
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            assert!(!out.contains("{{"), "{}", entry.path().display());
        }
    }
}
