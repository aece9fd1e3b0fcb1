//! `ImageScale`: IMAGE (and its MASK) to another size, ComfyUI's ImageScale inputs (`upscale_method`, `width`,
//! `height`, `crop`) and more: `area` resampling, `pad` (fit inside; the padding is black and masked), a colour
//! conversion, and the size of a connected model (so a photo of any size fits it).
//!
//! Size: with a `model` connected the output is the model's image size (`input_size`, times the connected VAE's
//! down-scaling factor for latent models, or 8 without one) and `width`/`height` are ignored; otherwise
//! `width` × `height`, where 0 keeps the aspect ratio from the other side (both 0: the image's own size), as in
//! ComfyUI.

use std::sync::Arc;

use odelt_contract::{
    types::{IMAGE, MASK},
    ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo, NodeOutput,
};
use odelt_nodes::pipeline::encode::is_pixel_space;
use odelt_nodes::pipeline::image_scale::{
    scale_image, ColorMode, ScaleOptions, COLOR_MODES, FITS, MAX_SIDE, SCALE_METHODS,
};
use odelt_nodes::pipeline::{class, ModelHandle, VaeHandle};

use crate::convert::{array_of, input_error, tensor_of};
use crate::types::{MODEL, VAE};

/// The scaling node.
pub struct ImageScale;

/// The widgets: method, fit, colour and the requested size (0 = from the other side / the image).
#[derive(Debug, Clone, Copy)]
pub struct ScaleWidgets {
    pub width: usize,
    pub height: usize,
    pub options: ScaleOptions,
}

/// Parses the widgets (validation and execution).
pub fn widgets(i: &Inputs<'_>) -> Result<ScaleWidgets, NodeError> {
    let side = |name: &str| -> Result<usize, NodeError> {
        let v = i.int(name)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= MAX_SIDE)
            .ok_or_else(|| {
                NodeError::invalid_input(name, format!("must be in 0..={MAX_SIDE} (got {v})"))
            })
    };
    let method = i.string("upscale_method")?;
    let fit = i.string("crop")?;
    let color = i.string("color")?;
    Ok(ScaleWidgets {
        width: side("width")?,
        height: side("height")?,
        options: ScaleOptions {
            width: 0,
            height: 0,
            method: method
                .parse()
                .map_err(|e| input_error("upscale_method", e))?,
            fit: fit.parse().map_err(|e| input_error("crop", e))?,
            color: color
                .parse::<ColorMode>()
                .map_err(|e| input_error("color", e))?,
        },
    })
}

/// The output size `(width, height)` for an image of `w` × `h`: ComfyUI's rule for zeros.
pub fn target_size(width: usize, height: usize, w: usize, h: usize) -> (usize, usize) {
    match (width, height) {
        (0, 0) => (w, h),
        (0, hh) => (((w * hh) as f64 / h as f64).round().max(1.0) as usize, hh),
        (ww, 0) => (ww, ((h * ww) as f64 / w as f64).round().max(1.0) as usize),
        (ww, hh) => (ww, hh),
    }
}

impl Node for ImageScale {
    const CLASS: &'static str = class::IMAGE_SCALE;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("Upscale Image")
            .category("image/upscaling")
            .description(
                "Scales the IMAGE (and its MASK with it) to a size — the connected model's, or width x height — \
                 by nearest, bilinear or area (box-average) resampling; stretched, centre-cropped to the aspect \
                 ratio, or fitted inside and padded (black, mask 1: ready to outpaint); optionally grey or RGB.",
            )
            .required("image", InputSpec::new(IMAGE).tooltip("The picture, e.g. from Load Image."))
            .required(
                "upscale_method",
                InputSpec::combo(SCALE_METHODS).default("area")
                    .tooltip("nearest-exact: the nearest pixel; bilinear: linear between pixel centres; area: the average of the pixels covered (best for shrinking photos)."),
            )
            .required(
                "width",
                InputSpec::int().default(0).min(0).max(MAX_SIDE as u64).step(1)
                    .tooltip("Output width; 0 keeps the aspect ratio from height (both 0: the image's size). Ignored when a model is connected."),
            )
            .required(
                "height",
                InputSpec::int().default(0).min(0).max(MAX_SIDE as u64).step(1)
                    .tooltip("Output height; 0 keeps the aspect ratio from width. Ignored when a model is connected."),
            )
            .required(
                "crop",
                InputSpec::combo(FITS).default("center")
                    .tooltip("disabled: stretch to the size; center: cut the centre part with the size's aspect ratio; pad: fit inside and pad with black (mask 1)."),
            )
            .required(
                "color",
                InputSpec::combo(COLOR_MODES).default("keep")
                    .tooltip("keep: as loaded; grayscale: luma (BT.601) in all three channels; rgb: repeat a one-channel image. ODEt Encode converts to the model's channels either way."),
            )
            .optional("model", InputSpec::new(MODEL).tooltip("Scale to this model's image size (width and height are then ignored)."))
            .optional("vae", InputSpec::new(VAE).tooltip("With a latent-space model: the VAE whose down-scaling factor sets the image size (8 when not connected)."))
            .optional("mask", InputSpec::new(MASK).tooltip("A mask of the image's size (e.g. Load Image's), scaled and cropped or padded with it."))
            .output_with_tooltip(IMAGE, "IMAGE", "The scaled picture.")
            .output_with_tooltip(MASK, "MASK", "The scaled mask (zeros when none was given), 1 where padding was added.")
    }

    fn run(inputs: &Inputs<'_>, _ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let img = array_of("image", inputs.tensor("image")?)?;
        let mask = inputs
            .opt_tensor("mask")?
            .map(|t| array_of("mask", t))
            .transpose()?;
        let wd = widgets(inputs)?;
        let (h, w) = match img.shape.as_slice() {
            [_, h, w, _] if *h > 0 && *w > 0 => (*h, *w),
            s => {
                return Err(NodeError::invalid_input(
                    "image",
                    format!("an IMAGE is a non-empty [B, H, W, C] array, got shape {s:?}"),
                ))
            }
        };
        let (width, height) = match inputs.get("model") {
            Some(_) => {
                let m = inputs.handle_as::<ModelHandle>("model")?;
                let factor = match inputs.get("vae") {
                    Some(_) => inputs
                        .handle_as::<Arc<VaeHandle>>("vae")?
                        .config()
                        .downscale_factor(),
                    None if is_pixel_space(m.config()) => 1,
                    None => 8,
                };
                let s = m.config().input_size * factor;
                (s, s)
            }
            None => target_size(wd.width, wd.height, w, h),
        };
        let opts = ScaleOptions {
            width,
            height,
            ..wd.options
        };
        let (out, m) =
            scale_image(&img, mask.as_ref(), &opts).map_err(|e| input_error("image", e))?;
        Ok(NodeOutput::new()
            .with(tensor_of(&out)?)
            .with(tensor_of(&m)?))
    }
}
