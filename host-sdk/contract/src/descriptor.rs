//! Node descriptors: Rust types that serialize exactly to ComfyUI's `/object_info` schema.
//!
//! A plugin builds [`NodeInfo`]s with the builder methods; they cross the boundary as JSON
//! (the map `{class_type: NodeInfo}` that `GET /object_info` serves), and the host parses
//! them back into the same types to validate prompts.

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value as Json};
use std::fmt;

/// Default `python_module` value: ComfyUI's frontend rejects node definitions without one.
pub const DEFAULT_PYTHON_MODULE: &str = "custom_nodes.odelt";

/// Widget type names with host-side literal checking.
pub mod types {
    /// 64-bit integer widget.
    pub const INT: &str = "INT";
    /// Float widget.
    pub const FLOAT: &str = "FLOAT";
    /// Text widget.
    pub const STRING: &str = "STRING";
    /// Checkbox widget.
    pub const BOOLEAN: &str = "BOOLEAN";
    /// The V2 spelling of a combo (`["COMBO", {"options": [...]}]`); [`super::InputType::Combo`]
    /// is used for both spellings.
    pub const COMBO: &str = "COMBO";
    /// Wildcard: accepts any link and any literal (passed as JSON).
    pub const ANY: &str = "*";
    /// `[B, H, W, C]` f32 in 0..1.
    pub const IMAGE: &str = "IMAGE";
    /// `[B, C, H, W]` f32 latent.
    pub const LATENT: &str = "LATENT";
    /// `[B, H, W]` f32 in 0..1 (ComfyUI's MASK: 1 = masked, e.g. 1 − alpha; "sample here" for a noise mask).
    pub const MASK: &str = "MASK";
}

/// The type part of an input spec: a type name, or the list of choices of a combo.
#[derive(Clone, Debug, PartialEq)]
pub enum InputType {
    /// `"INT"`, `"FLOAT"`, `"MODEL"`, `"*"`, a union `"INT,FLOAT"`, ...
    Named(String),
    /// A combo box; the value sent is one of these strings.
    Combo(Vec<String>),
}

impl InputType {
    /// The type name used for link type checks (`"COMBO"` for combos).
    pub fn name(&self) -> &str {
        match self {
            InputType::Named(n) => n,
            InputType::Combo(_) => types::COMBO,
        }
    }
}

/// Options of an input (`[TYPE, options]`). Known keys are typed; anything else the frontend
/// understands (`control_after_generate`, `forceInput`, `placeholder`, ...) goes in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputOptions {
    /// Default widget value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Json>,
    /// Smallest accepted value (INT/FLOAT). A JSON number (u64 seeds stay exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Json>,
    /// Largest accepted value (INT/FLOAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Json>,
    /// Widget step (INT/FLOAT). Not enforced by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Json>,
    /// FLOAT display rounding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<Json>,
    /// Hover text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tooltip: Option<String>,
    /// Multi-line STRING widget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<bool>,
    /// Other option keys, passed through unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

/// One input: `[TYPE, options]` on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// The type or combo choices.
    pub ty: InputType,
    /// The options.
    pub options: InputOptions,
}

impl InputSpec {
    /// An input of any type name (e.g. `"MODEL"`, `"LATENT"`, `"INT,FLOAT"`).
    pub fn new(ty: &str) -> Self {
        InputSpec {
            ty: InputType::Named(ty.to_string()),
            options: InputOptions::default(),
        }
    }
    /// An INT widget.
    pub fn int() -> Self {
        Self::new(types::INT)
    }
    /// A FLOAT widget.
    pub fn float() -> Self {
        Self::new(types::FLOAT)
    }
    /// A STRING widget.
    pub fn string() -> Self {
        Self::new(types::STRING)
    }
    /// A BOOLEAN widget.
    pub fn boolean() -> Self {
        Self::new(types::BOOLEAN)
    }
    /// A combo with these choices.
    pub fn combo<I, S>(choices: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        InputSpec {
            ty: InputType::Combo(choices.into_iter().map(Into::into).collect()),
            options: InputOptions::default(),
        }
    }
    /// Sets the default value.
    pub fn default(mut self, v: impl Into<Json>) -> Self {
        self.options.default = Some(v.into());
        self
    }
    /// Sets the minimum (checked by the host before anything runs).
    pub fn min(mut self, v: impl Into<Json>) -> Self {
        self.options.min = Some(v.into());
        self
    }
    /// Sets the maximum (checked by the host before anything runs).
    pub fn max(mut self, v: impl Into<Json>) -> Self {
        self.options.max = Some(v.into());
        self
    }
    /// Sets the widget step.
    pub fn step(mut self, v: impl Into<Json>) -> Self {
        self.options.step = Some(v.into());
        self
    }
    /// Sets the tooltip.
    pub fn tooltip(mut self, t: impl Into<String>) -> Self {
        self.options.tooltip = Some(t.into());
        self
    }
    /// Makes a STRING widget multi-line.
    pub fn multiline(mut self) -> Self {
        self.options.multiline = Some(true);
        self
    }
    /// Sets any other option key (e.g. `"control_after_generate", true`).
    pub fn option(mut self, key: &str, v: impl Into<Json>) -> Self {
        self.options.extra.insert(key.to_string(), v.into());
        self
    }
}

impl Serialize for InputSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        match &self.ty {
            InputType::Named(n) => seq.serialize_element(n)?,
            InputType::Combo(c) => seq.serialize_element(c)?,
        }
        seq.serialize_element(&self.options)?;
        seq.end()
    }
}

impl<'de> Deserialize<'de> for InputSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InputSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an input spec [TYPE] or [TYPE, {options}]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputSpec, A::Error> {
                let ty: Json = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("empty input spec"))?;
                let mut options: InputOptions = seq.next_element()?.unwrap_or_default();
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                let ty = match ty {
                    Json::String(s) if s == types::COMBO => {
                        let choices = options.extra.remove("options").unwrap_or(Json::Null);
                        InputType::Combo(choice_strings(&choices).ok_or_else(|| {
                            de::Error::custom("COMBO input without an `options` list")
                        })?)
                    }
                    Json::String(s) => InputType::Named(s),
                    other => InputType::Combo(choice_strings(&other).ok_or_else(|| {
                        de::Error::custom("input type must be a string or a list of choices")
                    })?),
                };
                Ok(InputSpec { ty, options })
            }
        }
        d.deserialize_seq(V)
    }
}

fn choice_strings(v: &Json) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|c| match c {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    })
}

/// An ordered `name -> InputSpec` map (serialized as a JSON object, order preserved).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputMap(pub Vec<(String, InputSpec)>);

impl InputMap {
    /// Looks an input up by name.
    pub fn get(&self, name: &str) -> Option<&InputSpec> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
    /// Iterates in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &InputSpec)> {
        self.0.iter().map(|(n, s)| (n.as_str(), s))
    }
    /// Whether there are no inputs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for InputMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for InputMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InputMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of input name to input spec")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<InputMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, InputSpec>()? {
                    out.push((k, v));
                }
                Ok(InputMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The `input` member: required, optional and hidden inputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInputs {
    /// Inputs that must be given (a literal or a link).
    #[serde(default)]
    pub required: InputMap,
    /// Inputs that may be omitted.
    #[serde(default, skip_serializing_if = "InputMap::is_empty")]
    pub optional: InputMap,
    /// ComfyUI hidden inputs (`"prompt": "PROMPT"`, ...); informative only — odelt passes
    /// the equivalent information in the [`crate::ExecContext`].
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub hidden: Map<String, Json>,
}

/// The `input_order` member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputOrder {
    /// Required input names in widget order.
    #[serde(default)]
    pub required: Vec<String>,
    /// Optional input names in widget order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<String>,
}

/// odelt-specific flags (an extra `odelt` member the ComfyUI frontend ignores).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OdeltFlags {
    /// The node works on the assigned device (GPU): the host runs at most one such node per
    /// device at a time.
    #[serde(default)]
    pub device_bound: bool,
    /// The node's output must never be served from cache (like ComfyUI's `IS_CHANGED` = NaN);
    /// everything downstream re-runs too.
    #[serde(default)]
    pub always_run: bool,
    /// The plugin implements `validate` for this node (set by [`crate::NodeRegistry`]).
    #[serde(default)]
    pub validates_inputs: bool,
}

impl OdeltFlags {
    fn is_default(&self) -> bool {
        self == &OdeltFlags::default()
    }
}

/// One node class as `GET /object_info` describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Inputs.
    pub input: NodeInputs,
    /// Input names in order.
    pub input_order: InputOrder,
    /// Whether the node takes whole lists (always false for odelt nodes).
    #[serde(default)]
    pub is_input_list: bool,
    /// Output types.
    pub output: Vec<String>,
    /// Per output: whether it is a list (always false for odelt nodes).
    pub output_is_list: Vec<bool>,
    /// Output names.
    pub output_name: Vec<String>,
    /// Output tooltips (may be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_tooltips: Vec<String>,
    /// The class type (the key in `/object_info`).
    pub name: String,
    /// Title shown in the editor.
    pub display_name: String,
    /// Description ("" allowed, but present: the frontend requires it).
    #[serde(default)]
    pub description: String,
    /// Required by the frontend; any string.
    #[serde(default = "default_python_module")]
    pub python_module: String,
    /// Menu category, e.g. `"sampling"`.
    #[serde(default)]
    pub category: String,
    /// Whether this node is a root of execution (SaveImage-like).
    #[serde(default)]
    pub output_node: bool,
    /// Shown as deprecated by the frontend.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deprecated: bool,
    /// Shown as experimental by the frontend.
    #[serde(default, skip_serializing_if = "is_false")]
    pub experimental: bool,
    /// odelt flags.
    #[serde(default, skip_serializing_if = "OdeltFlags::is_default")]
    pub odelt: OdeltFlags,
}

fn default_python_module() -> String {
    DEFAULT_PYTHON_MODULE.to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl NodeInfo {
    /// A node named `class_type` (also its display name) with no inputs and outputs.
    pub fn new(class_type: &str) -> Self {
        NodeInfo {
            input: NodeInputs::default(),
            input_order: InputOrder::default(),
            is_input_list: false,
            output: Vec::new(),
            output_is_list: Vec::new(),
            output_name: Vec::new(),
            output_tooltips: Vec::new(),
            name: class_type.to_string(),
            display_name: class_type.to_string(),
            description: String::new(),
            python_module: default_python_module(),
            category: String::new(),
            output_node: false,
            deprecated: false,
            experimental: false,
            odelt: OdeltFlags::default(),
        }
    }
    /// Sets the display name.
    pub fn display_name(mut self, s: impl Into<String>) -> Self {
        self.display_name = s.into();
        self
    }
    /// Sets the category.
    pub fn category(mut self, s: impl Into<String>) -> Self {
        self.category = s.into();
        self
    }
    /// Sets the description.
    pub fn description(mut self, s: impl Into<String>) -> Self {
        self.description = s.into();
        self
    }
    /// Sets `python_module`.
    pub fn python_module(mut self, s: impl Into<String>) -> Self {
        self.python_module = s.into();
        self
    }
    /// Adds a required input.
    pub fn required(mut self, name: &str, spec: InputSpec) -> Self {
        self.input.required.0.push((name.to_string(), spec));
        self.input_order.required.push(name.to_string());
        self
    }
    /// Adds an optional input.
    pub fn optional(mut self, name: &str, spec: InputSpec) -> Self {
        self.input.optional.0.push((name.to_string(), spec));
        self.input_order.optional.push(name.to_string());
        self
    }
    /// Declares a ComfyUI hidden input (e.g. `("prompt", "PROMPT")`) for the frontend's sake.
    pub fn hidden(mut self, name: &str, kind: &str) -> Self {
        self.input
            .hidden
            .insert(name.to_string(), Json::String(kind.to_string()));
        self
    }
    /// Adds an output of type `ty` named `name`.
    pub fn output(mut self, ty: &str, name: &str) -> Self {
        self.output.push(ty.to_string());
        self.output_name.push(name.to_string());
        self.output_is_list.push(false);
        self
    }
    /// Adds an output with a tooltip.
    pub fn output_with_tooltip(mut self, ty: &str, name: &str, tooltip: &str) -> Self {
        let n = self.output.len();
        self = self.output(ty, name);
        self.output_tooltips.resize(n, String::new());
        self.output_tooltips.push(tooltip.to_string());
        self
    }
    /// Marks the node as an output node (a root of execution).
    pub fn output_node(mut self) -> Self {
        self.output_node = true;
        self
    }
    /// Marks the node as using the device (serialized per device by the host).
    pub fn device_bound(mut self) -> Self {
        self.odelt.device_bound = true;
        self
    }
    /// Marks the node as never cacheable.
    pub fn always_run(mut self) -> Self {
        self.odelt.always_run = true;
        self
    }
    /// Marks the node as experimental.
    pub fn experimental(mut self) -> Self {
        self.experimental = true;
        self
    }
    /// Finds an input spec by name; the bool is `true` for required inputs.
    pub fn input_spec(&self, name: &str) -> Option<(&InputSpec, bool)> {
        if let Some(s) = self.input.required.get(name) {
            return Some((s, true));
        }
        self.input.optional.get(name).map(|s| (s, false))
    }
    /// Checks internal consistency (names, output arrays of equal length, orders matching).
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("node with an empty name".into());
        }
        if self.output.len() != self.output_name.len()
            || self.output.len() != self.output_is_list.len()
        {
            return Err(format!(
                "node '{}': output, output_name and output_is_list differ in length",
                self.name
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (n, _) in self.input.required.iter().chain(self.input.optional.iter()) {
            if !seen.insert(n) {
                return Err(format!("node '{}': input '{n}' declared twice", self.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ksampler_like() -> NodeInfo {
        NodeInfo::new("Sampler")
            .category("sampling")
            .required("model", InputSpec::new("MODEL").tooltip("the model"))
            .required(
                "seed",
                InputSpec::int()
                    .default(0)
                    .min(0)
                    .max(u64::MAX)
                    .option("control_after_generate", true),
            )
            .required(
                "cfg",
                InputSpec::float()
                    .default(8.0)
                    .min(0.0)
                    .max(100.0)
                    .step(0.1),
            )
            .required("sampler_name", InputSpec::combo(["euler", "heun"]))
            .optional("note", InputSpec::string().multiline())
            .output("LATENT", "LATENT")
    }

    #[test]
    fn serializes_to_object_info_shape() {
        let v = serde_json::to_value(ksampler_like()).unwrap();
        assert_eq!(
            v["input"]["required"]["model"],
            json!(["MODEL", {"tooltip": "the model"}])
        );
        assert_eq!(
            v["input"]["required"]["seed"],
            json!(["INT", {"default": 0, "min": 0, "max": 18446744073709551615u64, "control_after_generate": true}])
        );
        assert_eq!(
            v["input"]["required"]["sampler_name"][0],
            json!(["euler", "heun"])
        );
        assert_eq!(
            v["input_order"]["required"],
            json!(["model", "seed", "cfg", "sampler_name"])
        );
        assert_eq!(v["input_order"]["optional"], json!(["note"]));
        assert_eq!(v["output"], json!(["LATENT"]));
        assert_eq!(v["output_is_list"], json!([false]));
        assert_eq!(v["python_module"], json!(DEFAULT_PYTHON_MODULE));
        assert_eq!(v["description"], json!(""));
        assert_eq!(v["output_node"], json!(false));
        let keys: Vec<_> = v["input"]["required"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["model", "seed", "cfg", "sampler_name"]);
    }

    #[test]
    fn roundtrips_and_reads_v2_combo() {
        let n = ksampler_like();
        let back: NodeInfo = serde_json::from_value(serde_json::to_value(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        let spec: InputSpec =
            serde_json::from_value(json!(["COMBO", {"options": ["a", "b"]}])).unwrap();
        assert_eq!(spec.ty, InputType::Combo(vec!["a".into(), "b".into()]));
        let bare: InputSpec = serde_json::from_value(json!(["MODEL"])).unwrap();
        assert_eq!(bare.ty, InputType::Named("MODEL".into()));
        assert!(serde_json::from_value::<InputSpec>(json!([])).is_err());
        assert!(serde_json::from_value::<InputSpec>(json!([5])).is_err());
    }

    #[test]
    fn check_finds_inconsistencies() {
        assert!(ksampler_like().check().is_ok());
        let dup = NodeInfo::new("X")
            .required("a", InputSpec::int())
            .optional("a", InputSpec::int());
        assert!(dup.check().is_err());
    }
}
