//! Templates and expressions: one sandboxed language (MiniJinja) for prompts, approval
//! messages, conditions, loop tests and `for_each` lists.
//!
//! A template sees only the values a run hands it (`inputs`, `env`'s written values, `tasks`,
//! and in a loop `item` and `iteration`): there is no loader (so no include, import or
//! extends), undefined names are errors rather than empty text, and every evaluation has fuel
//! and a recursion limit, so a hostile file cannot loop or read anything else.

use std::collections::BTreeSet;

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value};

/// Instructions one evaluation may run before it is stopped.
const FUEL: u64 = 100_000;
/// The deepest nesting one evaluation may reach.
const RECURSION: usize = 64;
/// The longest text a template may render to.
pub const MAX_RENDERED: usize = 256 * 1024;

/// The names a template or expression may read.
pub const NAMES: [&str; 5] = ["inputs", "env", "tasks", "item", "iteration"];
/// Functions of the language a template may call.
const FUNCTIONS: [&str; 3] = ["range", "dict", "namespace"];

/// The one environment every flow's templates and expressions are compiled in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION);
    env
}

/// What went wrong with a template or expression: its message, and the line within the text
/// (from 1) when the language knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
    pub line: Option<usize>,
}

impl ExprError {
    fn of(err: &minijinja::Error) -> Self {
        let message = match err.detail() {
            Some(detail) => format!("{}: {detail}", kind_words(err.kind())),
            None => kind_words(err.kind()).to_owned(),
        };
        Self { message, line: err.line() }
    }
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn kind_words(kind: minijinja::ErrorKind) -> &'static str {
    use minijinja::ErrorKind as K;
    match kind {
        K::SyntaxError => "syntax error",
        K::UndefinedError => "undefined value",
        K::UnknownFilter => "unknown filter",
        K::UnknownFunction => "unknown function",
        K::UnknownTest => "unknown test",
        K::InvalidOperation => "invalid operation",
        K::OutOfFuel => "it took too many steps",
        K::TemplateNotFound => "templates cannot include, import or extend others",
        K::BadSerialization => "a value could not be read",
        _ => "it cannot be evaluated",
    }
}

/// The names `text`, a template, reads: `inputs.topic`, `tasks.draft.output`, ….
pub fn template_names(text: &str) -> Result<BTreeSet<String>, ExprError> {
    let env = environment();
    let template = env.template_from_str(text).map_err(|e| ExprError::of(&e))?;
    Ok(template.undeclared_variables(true).into_iter().collect())
}

/// The names `text`, an expression, reads.
pub fn expression_names(text: &str) -> Result<BTreeSet<String>, ExprError> {
    let env = environment();
    let expression = env.compile_expression(text).map_err(|e| ExprError::of(&e))?;
    Ok(expression.undeclared_variables(true).into_iter().collect())
}

/// Whether `name` (the first part of a read name) is a function of the language.
pub fn is_function(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}

/// Renders `text` over `context`.
pub fn render(text: &str, context: &serde_json::Value) -> Result<String, ExprError> {
    let env = environment();
    let rendered =
        env.render_str(text, Value::from(Serde(context))).map_err(|e| ExprError::of(&e))?;
    if rendered.len() > MAX_RENDERED {
        return Err(ExprError {
            message: format!(
                "it renders to {} bytes, more than the {MAX_RENDERED} a prompt may hold",
                rendered.len()
            ),
            line: None,
        });
    }
    Ok(rendered)
}

/// Evaluates `text`, an expression, over `context`, as JSON.
pub fn evaluate(text: &str, context: &serde_json::Value) -> Result<serde_json::Value, ExprError> {
    let env = environment();
    let expression = env.compile_expression(text).map_err(|e| ExprError::of(&e))?;
    let value = expression.eval(Value::from(Serde(context))).map_err(|e| ExprError::of(&e))?;
    serde_json::to_value(&value)
        .map_err(|e| ExprError { message: format!("its value cannot be read: {e}"), line: None })
}

/// Evaluates `text` as a condition: its truth, as the language reads it.
pub fn truth(text: &str, context: &serde_json::Value) -> Result<bool, ExprError> {
    let env = environment();
    let expression = env.compile_expression(text).map_err(|e| ExprError::of(&e))?;
    let value = expression.eval(Value::from(Serde(context))).map_err(|e| ExprError::of(&e))?;
    Ok(value.is_true())
}
