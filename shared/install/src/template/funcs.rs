//! The functions templates may call: Go's builtins and the few sprig/Helm functions the
//! charts use. Each takes already evaluated arguments (the piped value last, as in Go);
//! `and`, `or`, `include` and `.Files.Get` need the executor and live in `exec`.

use base64::Engine as _;
use serde_json::{Map, Value};

/// Names of the functions templates may call ([`call`] knows most), plus those the executor handles itself.
pub const NAMES: &[&str] = &[
    "and",
    "or",
    "include",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "default",
    "required",
    "fail",
    "empty",
    "coalesce",
    "ternary",
    "quote",
    "squote",
    "toYaml",
    "toJson",
    "b64enc",
    "indent",
    "nindent",
    "printf",
    "print",
    "trunc",
    "trimSuffix",
    "trimPrefix",
    "trim",
    "replace",
    "lower",
    "upper",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "list",
    "dict",
    "hasKey",
    "keys",
    "join",
    "concat",
    "add",
    "int",
    "toString",
    "len",
    "index",
];

/// Calls the function `name`.
pub(super) fn call(name: &str, args: Vec<Value>) -> Result<Value, String> {
    match name {
        "not" => {
            let [v] = exact::<1>(name, args)?;
            Ok(Value::Bool(!truthy(&v)))
        }
        "eq" => {
            if args.len() < 2 {
                return Err("eq needs at least two arguments".into());
            }
            let first = &args[0];
            Ok(Value::Bool(
                args[1..].iter().any(|a| values_equal(first, a)),
            ))
        }
        "ne" => {
            let [a, b] = exact::<2>(name, args)?;
            Ok(Value::Bool(!values_equal(&a, &b)))
        }
        "lt" | "le" | "gt" | "ge" => {
            let [a, b] = exact::<2>(name, args)?;
            let (a, b) = (number(&a, name)?, number(&b, name)?);
            Ok(Value::Bool(match name {
                "lt" => a < b,
                "le" => a <= b,
                "gt" => a > b,
                _ => a >= b,
            }))
        }
        "default" => {
            let [fallback, given] = match args.len() {
                1 => [args.into_iter().next().unwrap_or(Value::Null), Value::Null],
                _ => exact::<2>(name, args)?,
            };
            Ok(if truthy(&given) { given } else { fallback })
        }
        "required" => {
            let [message, value] = exact::<2>(name, args)?;
            match &value {
                Value::Null => Err(display(&message)?),
                Value::String(s) if s.is_empty() => Err(display(&message)?),
                _ => Ok(value),
            }
        }
        "fail" => {
            let [message] = exact::<1>(name, args)?;
            Err(display(&message)?)
        }
        "empty" => {
            let [v] = exact::<1>(name, args)?;
            Ok(Value::Bool(!truthy(&v)))
        }
        "coalesce" => Ok(args.into_iter().find(truthy).unwrap_or(Value::Null)),
        "ternary" => {
            let [yes, no, condition] = exact::<3>(name, args)?;
            Ok(if truthy(&condition) { yes } else { no })
        }
        "quote" | "squote" => {
            let quoted: Result<Vec<String>, String> = args
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| {
                    let s = display(v)?;
                    Ok(if name == "quote" {
                        serde_json::to_string(&s).map_err(|e| e.to_string())?
                    } else {
                        format!("'{s}'")
                    })
                })
                .collect();
            Ok(Value::String(quoted?.join(" ")))
        }
        "toYaml" => {
            let [v] = exact::<1>(name, args)?;
            let text = serde_yaml_ng::to_string(&v).map_err(|e| e.to_string())?;
            // Helm trims the final newline so `nindent` composes cleanly.
            Ok(Value::String(text.trim_end_matches('\n').to_owned()))
        }
        "toJson" => {
            let [v] = exact::<1>(name, args)?;
            Ok(Value::String(
                serde_json::to_string(&v).map_err(|e| e.to_string())?,
            ))
        }
        "b64enc" => {
            let [v] = exact::<1>(name, args)?;
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(display(&v)?),
            ))
        }
        "indent" | "nindent" => {
            let [width, text] = exact::<2>(name, args)?;
            let width = usize::try_from(integer(&width, name)?)
                .map_err(|_| format!("{name}: negative width"))?;
            let pad = " ".repeat(width);
            let indented = display(&text)?
                .split('\n')
                .map(|line| format!("{pad}{line}"))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Value::String(if name == "nindent" {
                format!("\n{indented}")
            } else {
                indented
            }))
        }
        "printf" => {
            let mut args = args.into_iter();
            let format = display(&args.next().ok_or("printf needs a format")?)?;
            printf(&format, args.collect()).map(Value::String)
        }
        "print" => {
            let parts: Result<Vec<String>, String> = args.iter().map(display).collect();
            Ok(Value::String(parts?.concat()))
        }
        "trunc" => {
            let [n, s] = exact::<2>(name, args)?;
            let n = usize::try_from(integer(&n, name)?).map_err(|_| "trunc: negative length")?;
            Ok(Value::String(display(&s)?.chars().take(n).collect()))
        }
        "trimSuffix" | "trimPrefix" => {
            let [affix, s] = exact::<2>(name, args)?;
            let (affix, s) = (display(&affix)?, display(&s)?);
            let trimmed = if name == "trimSuffix" {
                s.strip_suffix(affix.as_str())
            } else {
                s.strip_prefix(affix.as_str())
            };
            Ok(Value::String(trimmed.unwrap_or(&s).to_owned()))
        }
        "trim" | "lower" | "upper" | "toString" => {
            let [s] = exact::<1>(name, args)?;
            let s = display(&s)?;
            Ok(Value::String(match name {
                "trim" => s.trim().to_owned(),
                "lower" => s.to_lowercase(),
                "upper" => s.to_uppercase(),
                _ => s,
            }))
        }
        "replace" => {
            let [old, new, s] = exact::<3>(name, args)?;
            Ok(Value::String(
                display(&s)?.replace(&display(&old)?, &display(&new)?),
            ))
        }
        "contains" | "hasPrefix" | "hasSuffix" => {
            let [needle, s] = exact::<2>(name, args)?;
            let (needle, s) = (display(&needle)?, display(&s)?);
            Ok(Value::Bool(match name {
                "contains" => s.contains(&needle),
                "hasPrefix" => s.starts_with(&needle),
                _ => s.ends_with(&needle),
            }))
        }
        "list" => Ok(Value::Array(args)),
        "dict" => {
            if !args.len().is_multiple_of(2) {
                return Err("dict needs key/value pairs".into());
            }
            let mut map = Map::new();
            let mut it = args.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                map.insert(display(&k)?, v);
            }
            Ok(Value::Object(map))
        }
        "hasKey" => {
            let [map, key] = exact::<2>(name, args)?;
            let Value::Object(map) = map else {
                return Err("hasKey: first argument is not a map".into());
            };
            Ok(Value::Bool(map.contains_key(&display(&key)?)))
        }
        "keys" => {
            let [map] = exact::<1>(name, args)?;
            let Value::Object(map) = map else {
                return Err("keys: argument is not a map".into());
            };
            Ok(Value::Array(
                map.keys().cloned().map(Value::String).collect(),
            ))
        }
        "join" => {
            let [sep, list] = exact::<2>(name, args)?;
            let Value::Array(items) = list else {
                return Err("join: second argument is not a list".into());
            };
            let parts: Result<Vec<String>, String> = items.iter().map(display).collect();
            Ok(Value::String(parts?.join(&display(&sep)?)))
        }
        "concat" => {
            let mut all = Vec::new();
            for list in args {
                match list {
                    Value::Array(items) => all.extend(items),
                    Value::Null => {}
                    other => return Err(format!("concat: {} is not a list", kind(&other))),
                }
            }
            Ok(Value::Array(all))
        }
        "add" => {
            if args.is_empty() {
                return Err("add needs at least one argument".into());
            }
            let mut sum: i64 = 0;
            for value in &args {
                sum = sum
                    .checked_add(integer(value, name)?)
                    .ok_or("add: integer overflow")?;
            }
            Ok(Value::from(sum))
        }
        "int" => {
            let [v] = exact::<1>(name, args)?;
            match &v {
                Value::String(s) => s
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("int: {s:?} is not an integer")),
                _ => Ok(Value::from(number(&v, name)? as i64)),
            }
        }
        "len" => {
            let [v] = exact::<1>(name, args)?;
            let len = match &v {
                Value::String(s) => s.len(),
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::Null => 0,
                _ => return Err("len of a number or boolean".into()),
            };
            Ok(Value::from(len))
        }
        "index" => {
            let mut args = args.into_iter();
            let mut current = args.next().ok_or("index needs a collection")?;
            for key in args {
                current = match (&current, &key) {
                    (Value::Object(m), _) => m.get(&display(&key)?).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), Value::Number(_)) => {
                        let i = usize::try_from(integer(&key, "index")?)
                            .map_err(|_| "index: negative")?;
                        a.get(i).cloned().ok_or("index out of range")?
                    }
                    _ => return Err(format!("cannot index {} with {key}", kind(&current))),
                };
            }
            Ok(current)
        }
        other => Err(format!("function {other:?} is not in the supported subset")),
    }
}

/// Go template truthiness: false, 0, nil and empty strings/lists/maps are false.
pub(super) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// How a value prints (`fmt.Sprint` for scalars; nil prints as nothing, as in Helm).
pub(super) fn display(value: &Value) -> Result<String, String> {
    match value {
        Value::Null => Ok(String::new()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(_) | Value::Object(_) => Err(format!(
            "cannot print a {}: use toYaml or toJson",
            kind(value)
        )),
    }
}

/// A short name of the value's type for error messages.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn number(value: &Value, function: &str) -> Result<f64, String> {
    value
        .as_f64()
        .ok_or_else(|| format!("{function}: {} is not a number", kind(value)))
}

fn integer(value: &Value, function: &str) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| format!("{function}: expected an integer, got {value}"))
}

fn exact<const N: usize>(name: &str, args: Vec<Value>) -> Result<[Value; N], String> {
    let got = args.len();
    args.try_into()
        .map_err(|_| format!("{name} takes {N} argument(s), got {got}"))
}

/// `printf` with the verbs `%s`, `%d`, `%v`, `%q` and `%%`.
fn printf(format: &str, args: Vec<Value>) -> Result<String, String> {
    let mut out = String::new();
    let mut args = args.into_iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let verb = chars.next().ok_or("printf: format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args
            .next()
            .ok_or_else(|| format!("printf: missing argument for %{verb}"))?;
        match verb {
            's' | 'v' => out.push_str(&display(&arg)?),
            'd' => out.push_str(&integer(&arg, "printf %d")?.to_string()),
            'q' => {
                out.push_str(&serde_json::to_string(&display(&arg)?).map_err(|e| e.to_string())?)
            }
            other => return Err(format!("printf: verb %{other} is not supported")),
        }
    }
    if args.next().is_some() {
        return Err("printf: more arguments than verbs".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn default_keeps_given_values_and_replaces_empty_ones() {
        assert_eq!(
            call("default", vec![json!("d"), json!("x")]).unwrap(),
            json!("x")
        );
        assert_eq!(
            call("default", vec![json!("d"), json!("")]).unwrap(),
            json!("d")
        );
        assert_eq!(call("default", vec![json!(3), json!(0)]).unwrap(), json!(3));
        assert_eq!(
            call("default", vec![json!("d"), Value::Null]).unwrap(),
            json!("d")
        );
    }

    #[test]
    fn nindent_indents_every_line_after_a_newline() {
        let out = call("nindent", vec![json!(2), json!("a: 1\nb: 2")]).unwrap();
        assert_eq!(out, json!("\n  a: 1\n  b: 2"));
    }

    #[test]
    fn to_yaml_drops_the_final_newline() {
        let out = call("toYaml", vec![json!({"cpu": "100m"})]).unwrap();
        assert_eq!(out, json!("cpu: 100m"));
    }

    #[test]
    fn printf_formats_and_rejects_unknown_verbs() {
        let out = call(
            "printf",
            vec![json!("%s-%d:%q"), json!("a"), json!(7), json!("b")],
        );
        assert_eq!(out.unwrap(), json!("a-7:\"b\""));
        assert!(call("printf", vec![json!("%x"), json!(1)]).is_err());
        assert!(call("printf", vec![json!("%s"), json!(1), json!(2)]).is_err());
    }

    #[test]
    fn required_fails_on_nil_and_empty() {
        assert_eq!(
            call("required", vec![json!("need x"), Value::Null]).unwrap_err(),
            "need x"
        );
        assert!(call("required", vec![json!("m"), json!("")]).is_err());
        assert_eq!(
            call("required", vec![json!("m"), json!(false)]).unwrap(),
            json!(false)
        );
    }

    #[test]
    fn unknown_functions_are_refused() {
        assert!(
            call("sha256sum", vec![json!("x")])
                .unwrap_err()
                .contains("subset")
        );
    }

    #[test]
    fn printing_a_map_is_an_error() {
        assert!(display(&json!({"a": 1})).is_err());
        assert_eq!(display(&Value::Null).unwrap(), "");
    }
}
