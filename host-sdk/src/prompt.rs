//! ComfyUI API-format prompts: `{"id": {"class_type", "inputs": {name: literal | [src, out]},
//! "_meta": {"title"}}}`.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

/// The prompt is not usable at all (before per-node validation).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// The text is not JSON (serde_json's nesting limit of 128 applies).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The top level is not an object of nodes.
    #[error("a prompt must be a JSON object of nodes, got {0}")]
    NotAnObject(&'static str),
    /// A node entry is not an object.
    #[error("node '{0}' is not a JSON object")]
    NodeNotObject(String),
    /// A node has no (string) `class_type`.
    #[error("node '{0}' has no class_type")]
    MissingClassType(String),
    /// A node's `inputs` is not an object.
    #[error("node '{0}': inputs must be a JSON object")]
    InputsNotObject(String),
}

impl PromptError {
    /// The ComfyUI error object (`{"type": "invalid_prompt", ...}`).
    pub fn to_comfy(&self) -> Json {
        serde_json::json!({
            "type": "invalid_prompt",
            "message": "Cannot execute because the prompt is invalid.",
            "details": self.to_string(),
            "extra_info": {}
        })
    }
}

/// One input as written in the prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum InputValue {
    /// `[source_node_id, output_index]`.
    Link {
        /// The source node's id.
        node: String,
        /// The output slot.
        output: usize,
    },
    /// A JSON array that is not a valid link (ComfyUI treats every list as a link; literal
    /// lists must be wrapped as `{"__value__": [...]}`).
    BadLink(Json),
    /// A widget value (with any `{"__value__": x}` wrapper removed).
    Literal(Json),
}

impl InputValue {
    /// Classifies a JSON input value.
    pub fn from_json(v: &Json) -> InputValue {
        match v {
            Json::Array(a) => {
                if a.len() == 2 {
                    let node = match &a[0] {
                        Json::String(s) => Some(s.clone()),
                        Json::Number(n) if n.is_u64() => Some(n.to_string()),
                        _ => None,
                    };
                    let output = a[1].as_u64().and_then(|o| usize::try_from(o).ok());
                    if let (Some(node), Some(output)) = (node, output) {
                        return InputValue::Link { node, output };
                    }
                }
                InputValue::BadLink(v.clone())
            }
            Json::Object(o) if o.len() == 1 && o.contains_key("__value__") => {
                InputValue::Literal(o["__value__"].clone())
            }
            other => InputValue::Literal(other.clone()),
        }
    }
}

/// One node of a prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptNode {
    /// The node id (the key in the prompt).
    pub id: String,
    /// Its class type.
    pub class_type: String,
    /// Its inputs in the order written.
    pub inputs: Vec<(String, InputValue)>,
    /// `_meta.title`, if any.
    pub title: Option<String>,
}

impl PromptNode {
    /// Finds an input by name.
    pub fn input(&self, name: &str) -> Option<&InputValue> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// A parsed API-format prompt (keeps the JSON it came from for `ExecContext::prompt_json`).
#[derive(Clone, Debug)]
pub struct Prompt {
    nodes: Vec<PromptNode>,
    index: HashMap<String, usize>,
    json: Map<String, Json>,
}

impl Prompt {
    /// Parses prompt text (the bare node map).
    pub fn from_json_str(text: &str) -> Result<Prompt, PromptError> {
        let v: Json = serde_json::from_str(text).map_err(|e| PromptError::Json(e.to_string()))?;
        Prompt::from_json(v)
    }

    /// Parses a JSON value (the bare node map).
    pub fn from_json(v: Json) -> Result<Prompt, PromptError> {
        match v {
            Json::Object(m) => Prompt::from_map(m),
            other => Err(PromptError::NotAnObject(json_kind(&other))),
        }
    }

    /// Parses a node map.
    pub fn from_map(json: Map<String, Json>) -> Result<Prompt, PromptError> {
        let mut nodes = Vec::with_capacity(json.len());
        let mut index = HashMap::with_capacity(json.len());
        for (id, node) in &json {
            let obj = node
                .as_object()
                .ok_or_else(|| PromptError::NodeNotObject(id.clone()))?;
            let class_type = obj
                .get("class_type")
                .and_then(Json::as_str)
                .ok_or_else(|| PromptError::MissingClassType(id.clone()))?
                .to_string();
            let inputs = match obj.get("inputs") {
                None | Some(Json::Null) => Vec::new(),
                Some(Json::Object(m)) => m
                    .iter()
                    .map(|(k, v)| (k.clone(), InputValue::from_json(v)))
                    .collect(),
                Some(_) => return Err(PromptError::InputsNotObject(id.clone())),
            };
            let title = obj
                .get("_meta")
                .and_then(|m| m.get("title"))
                .and_then(Json::as_str)
                .map(str::to_string);
            index.insert(id.clone(), nodes.len());
            nodes.push(PromptNode {
                id: id.clone(),
                class_type,
                inputs,
                title,
            });
        }
        Ok(Prompt { nodes, index, json })
    }

    /// The nodes, in the order of the JSON object.
    pub fn nodes(&self) -> &[PromptNode] {
        &self.nodes
    }

    /// Looks a node up by id.
    pub fn node(&self, id: &str) -> Option<&PromptNode> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    /// The index of node `id` in [`Prompt::nodes`].
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The prompt as JSON.
    pub fn json(&self) -> &Map<String, Json> {
        &self.json
    }
}

/// A short name of a JSON value's kind, for messages.
pub fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_links_literals_and_titles() {
        let p = Prompt::from_json(json!({
            "1": {"class_type": "A", "inputs": {"x": 3, "l": ["2", 0], "n": [2, 1],
                   "w": {"__value__": [1, 2]}, "bad": [1, 2, 3]}, "_meta": {"title": "T"}},
            "2": {"class_type": "B"}
        }))
        .unwrap();
        let n = p.node("1").unwrap();
        assert_eq!(n.title.as_deref(), Some("T"));
        assert_eq!(n.input("x"), Some(&InputValue::Literal(json!(3))));
        assert_eq!(
            n.input("l"),
            Some(&InputValue::Link {
                node: "2".into(),
                output: 0
            })
        );
        assert_eq!(
            n.input("n"),
            Some(&InputValue::Link {
                node: "2".into(),
                output: 1
            })
        );
        assert_eq!(n.input("w"), Some(&InputValue::Literal(json!([1, 2]))));
        assert!(matches!(n.input("bad"), Some(InputValue::BadLink(_))));
        assert!(p.node("2").unwrap().inputs.is_empty());
        assert_eq!(p.nodes()[0].id, "1");
    }

    #[test]
    fn structural_errors() {
        assert!(matches!(
            Prompt::from_json_str("{"),
            Err(PromptError::Json(_))
        ));
        assert!(matches!(
            Prompt::from_json(json!([1])),
            Err(PromptError::NotAnObject(_))
        ));
        assert!(matches!(
            Prompt::from_json(json!({"1": 5})),
            Err(PromptError::NodeNotObject(_))
        ));
        assert!(matches!(
            Prompt::from_json(json!({"1": {}})),
            Err(PromptError::MissingClassType(_))
        ));
        assert!(matches!(
            Prompt::from_json(json!({"1": {"class_type": "A", "inputs": [1]}})),
            Err(PromptError::InputsNotObject(_))
        ));
        let deep = "[".repeat(100_000);
        assert!(matches!(
            Prompt::from_json_str(&deep),
            Err(PromptError::Json(_))
        ));
    }
}
