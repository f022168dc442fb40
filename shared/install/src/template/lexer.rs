//! Splits a template into text and actions (`{{ … }}`), applies the `{{-`/`-}}` whitespace
//! trimming, drops comments, and tokenizes each action.

use serde_json::Value;

use super::TemplateError;

/// One token inside an action.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Token {
    /// `.a.b` (empty for `.` alone).
    Field(Vec<String>),
    /// `$name.a.b`; the name is empty for `$`.
    Var(String, Vec<String>),
    /// A function name or keyword.
    Ident(String),
    /// A string, number, boolean or nil literal.
    Literal(Value),
    LeftParen,
    RightParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// A piece of the template source.
#[derive(Debug)]
pub(super) enum Item {
    Text(String),
    Action { tokens: Vec<Token>, line: usize },
}

/// Splits `source` into items.
pub(super) fn lex(name: &str, source: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = source;
    let mut trim_next_text = false;
    let mut line = 1;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            push_text(&mut items, rest, trim_next_text, false);
            break;
        };
        let after_open = &rest[open + 2..];
        let trim_left = after_open.starts_with("- ")
            || after_open.starts_with("-\n")
            || after_open.starts_with("-\t");
        push_text(&mut items, &rest[..open], trim_next_text, trim_left);
        line += rest[..open].matches('\n').count();
        let body_start = if trim_left { 2 } else { 0 };
        let close = find_close(&after_open[body_start..])
            .ok_or_else(|| TemplateError::new(name, line, "unclosed action: no matching `}}`"))?;
        let body = &after_open[body_start..body_start + close];
        let (body, trim_right) = match body.strip_suffix(" -") {
            Some(b) => (b, true),
            None => match body.strip_suffix("\n-") {
                Some(b) => (b, true),
                None => (body, false),
            },
        };
        let trimmed = body.trim();
        if trimmed.starts_with("/*") {
            if !trimmed.ends_with("*/") {
                return Err(TemplateError::new(name, line, "unclosed comment"));
            }
        } else {
            let tokens = tokenize(trimmed).map_err(|m| TemplateError::new(name, line, m))?;
            items.push(Item::Action { tokens, line });
        }
        line += after_open[..body_start + close].matches('\n').count();
        trim_next_text = trim_right;
        rest = &after_open[body_start + close + 2..];
    }
    Ok(items)
}

/// Adds a text item, trimmed as the neighbouring actions ask.
fn push_text(items: &mut Vec<Item>, text: &str, trim_start: bool, trim_end: bool) {
    let mut text = text;
    if trim_start {
        text = text.trim_start();
    }
    if trim_end {
        text = text.trim_end();
    }
    if !text.is_empty() {
        items.push(Item::Text(text.to_owned()));
    }
}

/// The offset of the `}}` that closes an action, skipping string literals.
fn find_close(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' && q == b'"' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'"' || b == b'`' {
                    quote = Some(b);
                } else if b == b'}' && bytes.get(i + 1) == Some(&b'}') {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// Tokenizes the inside of one action.
fn tokenize(body: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = body.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                tokens.push(Token::LeftParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RightParen);
                i += 1;
            }
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '=' => {
                tokens.push(Token::Assign);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                tokens.push(Token::Declare);
                i += 2;
            }
            '"' => {
                let (s, next) = quoted(&chars, i + 1)?;
                tokens.push(Token::Literal(Value::String(s)));
                i = next;
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&ch| ch == '`')
                    .ok_or("unterminated raw string")?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                tokens.push(Token::Literal(Value::String(s)));
                i += end + 2;
            }
            '.' => {
                let (path, next) = field_path(&chars, i)?;
                tokens.push(Token::Field(path));
                i = next;
            }
            '$' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && is_ident_char(chars[end]) {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                let (path, next) = if chars.get(end) == Some(&'.') {
                    field_path(&chars, end)?
                } else {
                    (Vec::new(), end)
                };
                tokens.push(Token::Var(name, path));
                i = next;
            }
            c if c.is_ascii_digit() || (c == '-' && next_is_digit(&chars, i)) => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                tokens.push(Token::Literal(number(&text)?));
            }
            c if is_ident_char(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(match word.as_str() {
                    "true" => Token::Literal(Value::Bool(true)),
                    "false" => Token::Literal(Value::Bool(false)),
                    "nil" => Token::Literal(Value::Null),
                    _ => Token::Ident(word),
                });
            }
            other => return Err(format!("unexpected character {other:?} in action")),
        }
    }
    Ok(tokens)
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads `.a.b.c` starting at the first dot; `.` alone is the empty path.
fn field_path(chars: &[char], mut i: usize) -> Result<(Vec<String>, usize), String> {
    let mut path = Vec::new();
    while chars.get(i) == Some(&'.') {
        let start = i + 1;
        let mut end = start;
        while end < chars.len() && is_ident_char(chars[end]) {
            end += 1;
        }
        if end == start {
            if path.is_empty() && chars.get(end).is_none_or(|c| *c != '.') {
                return Ok((path, end));
            }
            return Err("empty field name".to_owned());
        }
        path.push(chars[start..end].iter().collect());
        i = end;
    }
    Ok((path, i))
}

/// Reads a double-quoted string with Go escapes; returns it and the index after the quote.
fn quoted(chars: &[char], mut i: usize) -> Result<(String, usize), String> {
    let mut out = String::new();
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((out, i + 1)),
            '\\' => {
                let escaped = chars.get(i + 1).ok_or("unterminated string")?;
                out.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '\\' => '\\',
                    '"' => '"',
                    other => return Err(format!("unsupported escape \\{other}")),
                });
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err("unterminated string".to_owned())
}

fn number(text: &str) -> Result<Value, String> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(Value::from(n));
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("bad number {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_whitespace_around_dash_markers() {
        let items = lex("t", "a  \n  {{- .x -}}  \n b").unwrap();
        let texts: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                Item::Text(t) => Some(t.as_str()),
                Item::Action { .. } => None,
            })
            .collect();
        assert_eq!(texts, ["a", "b"]);
    }

    #[test]
    fn tokenizes_fields_variables_and_literals() {
        let tokens = tokenize(r#"$x := .Values.a.b | default "q\"" 3 $.Release.Name ."#).unwrap();
        assert_eq!(
            tokens,
            vec![
                Token::Var("x".into(), vec![]),
                Token::Declare,
                Token::Field(vec!["Values".into(), "a".into(), "b".into()]),
                Token::Pipe,
                Token::Ident("default".into()),
                Token::Literal(Value::String("q\"".into())),
                Token::Literal(Value::from(3)),
                Token::Var("".into(), vec!["Release".into(), "Name".into()]),
                Token::Field(vec![]),
            ]
        );
    }

    #[test]
    fn comments_vanish_and_unclosed_actions_fail() {
        let items = lex("t", "a{{/* note */}}b").unwrap();
        assert_eq!(items.len(), 2);
        let err = lex("t", "line1\n{{ .x ").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn closing_braces_inside_strings_do_not_end_the_action() {
        let items = lex("t", r#"{{ "}}" }}"#).unwrap();
        assert!(
            matches!(&items[0], Item::Action { tokens, .. } if tokens == &[Token::Literal(Value::String("}}".into()))])
        );
    }
}
