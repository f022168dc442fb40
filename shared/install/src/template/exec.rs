//! Walks a parsed template with its data and writes the output.

use std::collections::BTreeMap;

use serde_json::Value;

use super::funcs::{self, display, kind, truthy};
use super::parser::{Node, Operand, Pipeline};
use super::{TemplateError, TemplateSet};

/// `include` and `template` may nest at most this deep (Helm stops runaway recursion too).
const MAX_DEPTH: usize = 64;

/// The state of one execution.
pub(super) struct Executor<'a> {
    pub(super) set: &'a TemplateSet,
    /// Files `.Files.Get` may read, by chart-relative path.
    pub(super) files: &'a BTreeMap<String, String>,
    /// Template name for error messages.
    pub(super) name: String,
    pub(super) depth: usize,
    /// `$` (the data the execution started with) is always the first entry.
    vars: Vec<(String, Value)>,
}

type Flow<T> = Result<T, TemplateError>;

impl<'a> Executor<'a> {
    pub(super) fn new(
        set: &'a TemplateSet,
        files: &'a BTreeMap<String, String>,
        name: &str,
        root: Value,
        depth: usize,
    ) -> Self {
        Self {
            set,
            files,
            name: name.to_owned(),
            depth,
            vars: vec![(String::new(), root)],
        }
    }

    fn error(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::new(&self.name, line, message)
    }

    pub(super) fn run(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Flow<()> {
        for node in nodes {
            self.node(node, dot, out)?;
        }
        Ok(())
    }

    fn scoped(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Flow<()> {
        let mark = self.vars.len();
        let result = self.run(nodes, dot, out);
        self.vars.truncate(mark);
        result
    }

    fn node(&mut self, node: &Node, dot: &Value, out: &mut String) -> Flow<()> {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Output { pipe, line } => {
                let value = self.pipeline(pipe, dot, *line)?;
                if pipe.vars.is_empty() {
                    out.push_str(&display(&value).map_err(|m| self.error(*line, m))?);
                }
            }
            Node::If {
                branches,
                otherwise,
                line,
            } => {
                let mark = self.vars.len();
                let mut taken = None;
                for (condition, body) in branches {
                    if truthy(&self.pipeline(condition, dot, *line)?) {
                        taken = Some(body);
                        break;
                    }
                }
                let result = self.scoped(taken.unwrap_or(otherwise), dot, out);
                self.vars.truncate(mark);
                result?;
            }
            Node::With {
                pipe,
                body,
                otherwise,
                line,
            } => {
                let mark = self.vars.len();
                let value = self.pipeline(pipe, dot, *line)?;
                let result = if truthy(&value) {
                    self.scoped(body, &value, out)
                } else {
                    self.scoped(otherwise, dot, out)
                };
                self.vars.truncate(mark);
                result?;
            }
            Node::Range {
                pipe,
                body,
                otherwise,
                line,
            } => self.range(pipe, body, otherwise, dot, *line, out)?,
            Node::Template { name, pipe, line } => {
                let data = match pipe {
                    Some(pipe) => self.pipeline(pipe, dot, *line)?,
                    None => Value::Null,
                };
                out.push_str(&self.include(name, data, *line)?);
            }
        }
        Ok(())
    }

    fn range(
        &mut self,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
        line: usize,
        out: &mut String,
    ) -> Flow<()> {
        let commands_only = Pipeline {
            vars: Vec::new(),
            assign: false,
            commands: pipe.commands.clone(),
        };
        let collection = self.pipeline(&commands_only, dot, line)?;
        let entries: Vec<(Value, Value)> = match collection {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i), v))
                .collect(),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| (Value::String(k), v))
                .collect(),
            other => {
                return Err(self.error(line, format!("cannot range over a {}", kind(&other))));
            }
        };
        if entries.is_empty() {
            return self.scoped(otherwise, dot, out);
        }
        for (key, value) in entries {
            let mark = self.vars.len();
            match pipe.vars.as_slice() {
                [] => {}
                [element] => self.vars.push((element.clone(), value.clone())),
                [k, v] => {
                    self.vars.push((k.clone(), key));
                    self.vars.push((v.clone(), value.clone()));
                }
                _ => return Err(self.error(line, "range declares at most two variables")),
            }
            let result = self.run(body, &value, out);
            self.vars.truncate(mark);
            result?;
        }
        Ok(())
    }

    /// Renders a `define`d template with `data` as both dot and `$`.
    pub(super) fn include(&self, name: &str, data: Value, line: usize) -> Flow<String> {
        let body = self
            .set
            .defines
            .get(name)
            .ok_or_else(|| self.error(line, format!("no template named {name:?}")))?;
        if self.depth >= MAX_DEPTH {
            return Err(self.error(line, format!("{name:?} nests more than {MAX_DEPTH} deep")));
        }
        let mut inner = Executor::new(self.set, self.files, name, data.clone(), self.depth + 1);
        let mut out = String::new();
        inner.run(body, &data, &mut out)?;
        Ok(out)
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Value, line: usize) -> Flow<Value> {
        let mut piped: Option<Value> = None;
        for command in &pipe.commands {
            piped = Some(self.command(command, dot, piped, line)?);
        }
        let value = piped.unwrap_or(Value::Null);
        match (pipe.vars.as_slice(), pipe.assign) {
            ([], _) => {}
            ([name], false) => self.vars.push((name.clone(), value.clone())),
            ([name], true) => {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| {
                        TemplateError::new(&self.name, line, format!("undefined variable ${name}"))
                    })?;
                slot.1 = value.clone();
            }
            _ => return Err(self.error(line, "only range may declare two variables")),
        }
        Ok(value)
    }

    fn command(
        &mut self,
        words: &[Operand],
        dot: &Value,
        piped: Option<Value>,
        line: usize,
    ) -> Flow<Value> {
        let Some((first, rest)) = words.split_first() else {
            return Err(self.error(line, "empty command"));
        };
        match first {
            Operand::Func(name) => self.call(name, rest, dot, piped, line),
            Operand::Field(path) if is_files_get(path) => {
                let mut args = self.operands(rest, dot, line)?;
                args.extend(piped);
                let [Value::String(path)] = args.as_slice() else {
                    return Err(self.error(line, ".Files.Get takes one path"));
                };
                let content = self
                    .files
                    .get(path)
                    .ok_or_else(|| self.error(line, format!("no file {path:?} in the chart")))?;
                Ok(Value::String(content.clone()))
            }
            _ if !rest.is_empty() || piped.is_some() => Err(self.error(
                line,
                "only functions take arguments (is a function name missing?)",
            )),
            operand => self.operand(operand, dot, line),
        }
    }

    fn call(
        &mut self,
        name: &str,
        rest: &[Operand],
        dot: &Value,
        piped: Option<Value>,
        line: usize,
    ) -> Flow<Value> {
        // `and`/`or` stop at the first deciding argument and return it, as Go's do.
        if name == "and" || name == "or" {
            let mut last = Value::Null;
            let count = rest.len() + usize::from(piped.is_some());
            if count < 2 {
                return Err(self.error(line, format!("{name} needs at least two arguments")));
            }
            for operand in rest {
                last = self.operand(operand, dot, line)?;
                if truthy(&last) == (name == "or") {
                    return Ok(last);
                }
            }
            return Ok(piped.unwrap_or(last));
        }
        let mut args = self.operands(rest, dot, line)?;
        args.extend(piped);
        if name == "include" {
            let [Value::String(template), data] = <[Value; 2]>::try_from(args)
                .map_err(|_| self.error(line, "include takes a name and a value"))?
            else {
                return Err(self.error(line, "include: the name must be a string"));
            };
            return self.include(&template, data, line).map(Value::String);
        }
        funcs::call(name, args).map_err(|m| self.error(line, format!("{name}: {m}")))
    }

    fn operands(&mut self, operands: &[Operand], dot: &Value, line: usize) -> Flow<Vec<Value>> {
        operands
            .iter()
            .map(|o| self.operand(o, dot, line))
            .collect()
    }

    fn operand(&mut self, operand: &Operand, dot: &Value, line: usize) -> Flow<Value> {
        match operand {
            Operand::Literal(value) => Ok(value.clone()),
            Operand::Field(path) => self.walk(dot, path, ".", line),
            Operand::Var(name, path) => {
                let base = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| self.error(line, format!("undefined variable ${name}")))?;
                self.walk(&base, path, &format!("${name}"), line)
            }
            Operand::Func(name) => self.call(name, &[], dot, None, line),
            Operand::Sub(pipe) => self.pipeline(pipe, dot, line),
        }
    }

    /// Follows `.a.b` from `base`; a missing key is nil, a key of nil is an error.
    fn walk(&self, base: &Value, path: &[String], start: &str, line: usize) -> Flow<Value> {
        let mut current = base;
        for (i, key) in path.iter().enumerate() {
            current = match current {
                Value::Object(map) => map.get(key).unwrap_or(&Value::Null),
                other => {
                    let at = format!("{start}{}", path[..=i].join("."));
                    return Err(self.error(
                        line,
                        format!("{at}: cannot read field {key:?} of a {}", kind(other)),
                    ));
                }
            };
        }
        Ok(current.clone())
    }
}

fn is_files_get(path: &[String]) -> bool {
    path.len() == 2 && path[0] == "Files" && path[1] == "Get"
}
