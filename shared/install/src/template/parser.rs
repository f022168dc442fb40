//! Builds the syntax tree of a template from the lexer's items: text, output actions, `if`,
//! `range`, `with`, `template`, and `define` blocks (which are collected separately).

use std::collections::BTreeMap;

use serde_json::Value;

use super::TemplateError;
use super::lexer::{Item, Token};

/// A node of the syntax tree.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Output {
        pipe: Pipeline,
        line: usize,
    },
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
        line: usize,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
        line: usize,
    },
    With {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
        line: usize,
    },
    Template {
        name: String,
        pipe: Option<Pipeline>,
        line: usize,
    },
}

/// `$a, $b := cmd | cmd …`.
#[derive(Debug, Clone, Default)]
pub(super) struct Pipeline {
    pub(super) vars: Vec<String>,
    /// `=` (assign to an existing variable) rather than `:=`.
    pub(super) assign: bool,
    pub(super) commands: Vec<Vec<Operand>>,
}

/// One word of a command.
#[derive(Debug, Clone)]
pub(super) enum Operand {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Literal(Value),
    Sub(Pipeline),
}

/// The parsed body of one file plus the `define`s it contains.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub(super) body: Vec<Node>,
    pub(super) defines: BTreeMap<String, Vec<Node>>,
}

/// What ended a list of nodes.
enum Stop {
    Eof,
    End,
    Else(Vec<Token>),
}

struct Parser<'a> {
    name: &'a str,
    items: std::vec::IntoIter<Item>,
    defines: BTreeMap<String, Vec<Node>>,
}

/// Parses a whole file.
pub(super) fn parse(name: &str, items: Vec<Item>) -> Result<Parsed, TemplateError> {
    let mut parser = Parser {
        name,
        items: items.into_iter(),
        defines: BTreeMap::new(),
    };
    let (body, end, line) = parser.list()?;
    match end {
        Stop::Eof => Ok(Parsed {
            body,
            defines: parser.defines,
        }),
        Stop::End => Err(TemplateError::new(name, line, "unexpected {{end}}")),
        Stop::Else(_) => Err(TemplateError::new(name, line, "unexpected {{else}}")),
    }
}

impl Parser<'_> {
    fn error(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::new(self.name, line, message)
    }

    /// Parses nodes until `end`, `else` or the end of input.
    fn list(&mut self) -> Result<(Vec<Node>, Stop, usize), TemplateError> {
        let mut nodes = Vec::new();
        let mut last_line = 0;
        while let Some(item) = self.items.next() {
            let (tokens, line) = match item {
                Item::Text(text) => {
                    nodes.push(Node::Text(text));
                    continue;
                }
                Item::Action { tokens, line } => (tokens, line),
            };
            last_line = line;
            let keyword = match tokens.first() {
                Some(Token::Ident(word)) => word.as_str(),
                None => return Err(self.error(line, "empty action")),
                _ => "",
            };
            match keyword {
                "end" => return Ok((nodes, Stop::End, line)),
                "else" => return Ok((nodes, Stop::Else(tokens[1..].to_vec()), line)),
                "if" => nodes.push(self.if_node(&tokens[1..], line)?),
                "range" => {
                    let pipe = self.pipeline(&tokens[1..], line)?;
                    let (body, otherwise) = self.body_with_else(line, "range")?;
                    nodes.push(Node::Range {
                        pipe,
                        body,
                        otherwise,
                        line,
                    });
                }
                "with" => {
                    let pipe = self.pipeline(&tokens[1..], line)?;
                    let (body, otherwise) = self.body_with_else(line, "with")?;
                    nodes.push(Node::With {
                        pipe,
                        body,
                        otherwise,
                        line,
                    });
                }
                "define" => {
                    let name = match tokens.get(1..) {
                        Some([Token::Literal(Value::String(name))]) => name.clone(),
                        _ => return Err(self.error(line, "define needs one quoted name")),
                    };
                    let (body, end, _) = self.list()?;
                    if !matches!(end, Stop::End) {
                        return Err(self.error(line, format!("define {name:?} has no {{{{end}}}}")));
                    }
                    self.defines.insert(name, body);
                }
                "template" => {
                    let (name, rest) = match tokens.get(1..) {
                        Some([Token::Literal(Value::String(name)), rest @ ..]) => {
                            (name.clone(), rest)
                        }
                        _ => return Err(self.error(line, "template needs a quoted name")),
                    };
                    let pipe = if rest.is_empty() {
                        None
                    } else {
                        Some(self.pipeline(rest, line)?)
                    };
                    nodes.push(Node::Template { name, pipe, line });
                }
                "block" | "break" | "continue" => {
                    return Err(self.error(
                        line,
                        format!("{{{{{keyword}}}}} is outside the supported template subset"),
                    ));
                }
                _ => nodes.push(Node::Output {
                    pipe: self.pipeline(&tokens, line)?,
                    line,
                }),
            }
        }
        Ok((nodes, Stop::Eof, last_line))
    }

    fn if_node(&mut self, condition: &[Token], line: usize) -> Result<Node, TemplateError> {
        let mut branches = Vec::new();
        let mut condition = self.pipeline(condition, line)?;
        loop {
            let (body, end, end_line) = self.list()?;
            branches.push((condition, body));
            match end {
                Stop::End => {
                    return Ok(Node::If {
                        branches,
                        otherwise: Vec::new(),
                        line,
                    });
                }
                Stop::Eof => return Err(self.error(line, "if has no {{end}}")),
                Stop::Else(rest) if rest.is_empty() => {
                    let (otherwise, end, _) = self.list()?;
                    if !matches!(end, Stop::End) {
                        return Err(self.error(end_line, "else has no {{end}}"));
                    }
                    return Ok(Node::If {
                        branches,
                        otherwise,
                        line,
                    });
                }
                Stop::Else(rest) => match rest.split_first() {
                    Some((Token::Ident(word), cond)) if word == "if" => {
                        condition = self.pipeline(cond, end_line)?;
                    }
                    _ => {
                        return Err(self.error(end_line, "only `else` and `else if` are supported"));
                    }
                },
            }
        }
    }

    fn body_with_else(
        &mut self,
        line: usize,
        what: &str,
    ) -> Result<(Vec<Node>, Vec<Node>), TemplateError> {
        let (body, end, _) = self.list()?;
        match end {
            Stop::End => Ok((body, Vec::new())),
            Stop::Eof => Err(self.error(line, format!("{what} has no {{{{end}}}}"))),
            Stop::Else(rest) if rest.is_empty() => {
                let (otherwise, end, _) = self.list()?;
                if matches!(end, Stop::End) {
                    Ok((body, otherwise))
                } else {
                    Err(self.error(line, format!("{what} … else has no {{{{end}}}}")))
                }
            }
            Stop::Else(_) => Err(self.error(line, format!("{what} supports a plain else only"))),
        }
    }

    /// Parses `[$vars :=] command | command …`.
    fn pipeline(&self, tokens: &[Token], line: usize) -> Result<Pipeline, TemplateError> {
        let mut pipe = Pipeline::default();
        let mut rest = tokens;
        let declaration = rest
            .iter()
            .position(|t| matches!(t, Token::Declare | Token::Assign));
        if let Some(at) = declaration {
            for token in &rest[..at] {
                match token {
                    Token::Var(name, path) if path.is_empty() && !name.is_empty() => {
                        pipe.vars.push(name.clone());
                    }
                    Token::Comma => {}
                    _ => return Err(self.error(line, "only variables may be declared")),
                }
            }
            if pipe.vars.is_empty() || pipe.vars.len() > 2 {
                return Err(self.error(line, "declare one or two variables"));
            }
            pipe.assign = matches!(rest[at], Token::Assign);
            rest = &rest[at + 1..];
        }
        let mut command = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            match &rest[i] {
                Token::Pipe => {
                    if command.is_empty() {
                        return Err(self.error(line, "empty command in pipeline"));
                    }
                    pipe.commands.push(std::mem::take(&mut command));
                }
                Token::LeftParen => {
                    let close = matching_paren(&rest[i..])
                        .ok_or_else(|| self.error(line, "unbalanced parentheses"))?;
                    let inner = self.pipeline(&rest[i + 1..i + close], line)?;
                    command.push(Operand::Sub(inner));
                    i += close;
                }
                Token::RightParen => return Err(self.error(line, "unbalanced parentheses")),
                Token::Field(path) => command.push(Operand::Field(path.clone())),
                Token::Var(name, path) => command.push(Operand::Var(name.clone(), path.clone())),
                Token::Ident(name) => command.push(Operand::Func(name.clone())),
                Token::Literal(value) => command.push(Operand::Literal(value.clone())),
                Token::Declare | Token::Assign | Token::Comma => {
                    return Err(self.error(line, "unexpected `:=`, `=` or `,`"));
                }
            }
            i += 1;
        }
        if command.is_empty() {
            return Err(self.error(line, "missing value in pipeline"));
        }
        pipe.commands.push(command);
        Ok(pipe)
    }
}

/// The index of the parenthesis closing the one at index 0.
fn matching_paren(tokens: &[Token]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::LeftParen => depth += 1,
            Token::RightParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}
