//! Test fixture: a second plugin with its own nodes, loaded next to `odelt-test-plugin` to
//! check that plugins live side by side, that tensors flow between plugins, and that a
//! plugin cannot look inside another plugin's handles.

use odelt_contract::{export_plugin, InputSpec, NodeError, NodeInfo, NodeOutput, NodeRegistry};

/// What this plugin would keep behind a handle (never created from another plugin).
struct Secret;

fn nodes() -> NodeRegistry {
    let mut r = NodeRegistry::new("odelt-test-plugin-b", env!("CARGO_PKG_VERSION"));
    r.node(
        NodeInfo::new("Negate")
            .category("odelt-test-b")
            .required("value", InputSpec::int().default(0))
            .output("INT", "INT"),
        |i, _| Ok(NodeOutput::new().with(i.int("value")?.wrapping_neg())),
    );
    r.node(
        NodeInfo::new("ImagePixels")
            .category("odelt-test-b")
            .description("Number of pixels (B*H*W) of an IMAGE made by another plugin.")
            .required("image", InputSpec::new("IMAGE"))
            .output("INT", "pixels"),
        |i, _| {
            let t = i.tensor("image")?;
            let d = t.dims();
            if d.len() != 4 {
                return Err(NodeError::invalid_input(
                    "image",
                    format!("expected 4 dims, got {d:?}"),
                ));
            }
            Ok(NodeOutput::new().with((d[0] * d[1] * d[2]) as i64))
        },
    );
    r.node(
        NodeInfo::new("PeekCounter")
            .category("odelt-test-b")
            .description("Tries to downcast a COUNTER handle made by another plugin (must fail).")
            .required("counter", InputSpec::new("COUNTER"))
            .output("INT", "INT"),
        |i, _| {
            i.handle_as::<Secret>("counter")?;
            Ok(NodeOutput::new().with(0i64))
        },
    );
    r
}

export_plugin!(nodes);
