//! `SetLatentNoiseMask`: LATENT + MASK → LATENT with a noise mask, honoured by `ODEtSampler` (1 = sample, 0 =
//! keep the source; see [`odelt_nodes::pipeline::noise_mask`]).
//!
//! ## How the mask travels
//! ComfyUI's LATENT is a dict (`{"samples": ..., "noise_mask": ...}`); here a LATENT crosses the ABI as a plain
//! `[B, C, H, W]` tensor, and the host checks that every LATENT output is one. So the LATENT this node returns
//! is a plain tensor too — a fresh copy of its input, so that it has an identity of its own — and the mask is
//! kept in this plugin beside it, keyed by that tensor's identity (the host hands a node's output to the nodes
//! downstream as the same shared buffer, never a copy). The sampler looks the mask up for its `latent_image`.
//! Consequences, all as in ComfyUI:
//! - the graph is ComfyUI's (encode → SetLatentNoiseMask → sampler), and every other LATENT consumer (decode,
//!   SaveLatent) sees the samples and ignores the mask, as ComfyUI's VAEDecode does;
//! - the sampler's own output carries no mask.
//!
//! An entry lives as long as someone else holds its tensor (the host's cache, a run in flight); entries whose
//! tensor only this table holds are dropped on every use and on "free memory". Should the host ever copy the
//! tensor on its way, the sampler would find no mask: it then fails with an error instead of sampling the
//! whole picture (it checks in the prompt whether its `latent_image` comes from this node).

use std::sync::{Arc, Mutex, OnceLock};

use odelt_contract::abi_stable::std_types::RArc;
use odelt_contract::{
    types::{LATENT, MASK},
    ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo, NodeOutput, TensorBuf,
    Value,
};
use odelt_nodes::pipeline::noise_mask::mask_for_latent;
use odelt_nodes::pipeline::{class, Array};

use crate::convert::{array_of, input_error};

/// The node.
pub struct SetLatentNoiseMask;

struct Entry {
    latent: RArc<TensorBuf>,
    mask: Arc<Array>,
}

fn table() -> &'static Mutex<Vec<Entry>> {
    static T: OnceLock<Mutex<Vec<Entry>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(Vec::new()))
}

fn prune_locked(t: &mut Vec<Entry>) {
    t.retain(|e| RArc::strong_count(&e.latent) > 1);
}

/// Drops the masks of latents nobody else holds any more.
pub fn prune() {
    prune_locked(&mut table().lock().unwrap_or_else(|p| p.into_inner()));
}

/// Remembers `mask` for the tensor `latent` (this very buffer).
pub fn attach(latent: RArc<TensorBuf>, mask: Array) {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    prune_locked(&mut t);
    t.push(Entry {
        latent,
        mask: Arc::new(mask),
    });
}

/// The noise mask attached to this very tensor, if any.
pub fn mask_of(latent: &RArc<TensorBuf>) -> Option<Arc<Array>> {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    prune_locked(&mut t);
    let p: *const TensorBuf = &**latent;
    t.iter()
        .find(|e| std::ptr::eq(&*e.latent, p))
        .map(|e| e.mask.clone())
}

/// Whether input `input` of node `node_id` in the prompt (ComfyUI API JSON) is linked to a SetLatentNoiseMask.
pub fn linked_to_noise_mask(prompt_json: &str, node_id: &str, input: &str) -> bool {
    let Ok(p) = serde_json::from_str::<serde_json::Value>(prompt_json) else {
        return false;
    };
    let Some(src) = p[node_id]["inputs"][input][0].as_str() else {
        return false;
    };
    p[src]["class_type"].as_str() == Some(class::SET_NOISE_MASK)
}

impl Node for SetLatentNoiseMask {
    const CLASS: &'static str = class::SET_NOISE_MASK;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("Set Latent Noise Mask")
            .category("latent/inpaint")
            .description(
                "Marks the region of the LATENT the ODEt Sampler regenerates (inpainting): where the mask is 1 it \
                 samples, where it is 0 the state follows the source's flow path ((1 - t)·noise + t·source) at \
                 every step and ends at the source. The mask is resampled to the latent's size.",
            )
            .required("samples", InputSpec::new(LATENT).tooltip("The source latents (e.g. from ODEt Encode)."))
            .required(
                "mask",
                InputSpec::new(MASK).tooltip("1 = regenerate, 0 = keep ([B, H, W] or [H, W], any size; e.g. Load Image's 1 − alpha)."),
            )
            .output_with_tooltip(LATENT, "LATENT", "The same latents, with the noise mask for the ODEt Sampler.")
    }

    fn run(inputs: &Inputs<'_>, _ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let samples = inputs.tensor("samples")?;
        let mask = array_of("mask", inputs.tensor("mask")?)?;
        match samples.dims().as_slice() {
            [b, _, h, w] => {
                mask_for_latent(&mask, *b, *h, *w).map_err(|e| input_error("mask", e))?;
            }
            s => {
                return Err(NodeError::invalid_input(
                    "samples",
                    format!("a LATENT is [B, C, H, W], got shape {s:?}"),
                ))
            }
        }
        // A copy with an identity of its own: the mask belongs to this output, not to the input's other users.
        let out = RArc::new(samples.clone());
        attach(out.clone(), mask);
        Ok(NodeOutput::new().with(Value::Tensor(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_their_tensor_and_go_with_it() {
        let a = RArc::new(TensorBuf::from_f32(&[1, 1, 1, 1], &[0.5]).unwrap());
        let b = RArc::new(TensorBuf::from_f32(&[1, 1, 1, 1], &[0.5]).unwrap());
        attach(a.clone(), Array::new(vec![1, 1], vec![1.0]).unwrap());
        assert!(mask_of(&a).is_some());
        assert!(mask_of(&b).is_none(), "an equal tensor is another tensor");
        let a2 = a.clone();
        drop(a);
        assert!(mask_of(&a2).is_some());
        let p: *const TensorBuf = &*a2;
        drop(a2);
        prune();
        let t = table().lock().unwrap();
        assert!(t.iter().all(|e| !std::ptr::eq(&*e.latent, p)));
    }

    #[test]
    fn finds_the_link_in_the_prompt() {
        let p = r#"{"3":{"class_type":"SetLatentNoiseMask","inputs":{}},"4":{"class_type":"ODEtSampler","inputs":{"latent_image":["3",0]}},"5":{"class_type":"ODEtSampler","inputs":{"latent_image":["4",0]}}}"#;
        assert!(linked_to_noise_mask(p, "4", "latent_image"));
        assert!(!linked_to_noise_mask(p, "5", "latent_image"));
        assert!(!linked_to_noise_mask("not json", "4", "latent_image"));
    }
}
