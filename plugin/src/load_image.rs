//! `LoadImage`: an image file of the input directory (uploads land there) → IMAGE `[1, H, W, 3]` in 0..1 and
//! MASK `[1, H, W]` = 1 − alpha, as ComfyUI's LoadImage.
//!
//! The choices are the PNG, JPEG and WebP files under the host's input directory, listed each time the host
//! describes the node (the host re-describes on every `/object_info` and before validating a prompt, so an upload
//! appears at once). Validation resolves the name inside the directory and reads the file's header (format,
//! size against the pixel limit); the pixels are decoded when the node runs ([`odelt_nodes::pipeline::load_image`]).

use odelt_contract::{
    types::{IMAGE, MASK},
    ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo, NodeOutput, Validation,
    ValidationIssue,
};
use odelt_nodes::pipeline::class;
use odelt_nodes::pipeline::load_image::{
    list_images, load_image_file, probe_image, resolve_image, ImageDirs, MAX_PIXELS,
};

use crate::convert::{dir_or, input_error, issue, tensor_of};

/// The image loader node.
pub struct LoadImage;

/// The chosen file's name (relative to the input directory).
pub fn image_name(i: &Inputs<'_>) -> Result<String, NodeError> {
    i.string("image").map(str::to_string)
}

impl Node for LoadImage {
    const CLASS: &'static str = class::LOAD_IMAGE;
    const VALIDATES: bool = true;

    fn describe(host: &HostContext<'_>) -> NodeInfo {
        let files = list_images(&dir_or(host.input_dir, "input"));
        NodeInfo::new(Self::CLASS)
            .display_name("Load Image")
            .category("image")
            .description(
                "Reads a PNG, JPEG or WebP file from the input directory (where uploads go): the IMAGE in 0..1 \
                 (EXIF orientation applied; the first frame of an animation) and a MASK from its alpha channel \
                 (1 − alpha, zeros without alpha), as ComfyUI's LoadImage. Pictures over 40 megapixels are refused.",
            )
            .required(
                "image",
                InputSpec::combo(files)
                    .option("image_upload", true)
                    .tooltip("An image file in the input directory (upload one with the button, or POST /upload/image)."),
            )
            .output_with_tooltip(IMAGE, "IMAGE", "The picture [1, H, W, 3], 0..1.")
            .output_with_tooltip(MASK, "MASK", "1 − alpha [1, H, W] (1 = transparent); zeros when the file has no alpha.")
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let name = image_name(inputs)?;
        let (input, output, temp) = (
            dir_or(ctx.input_dir, "input"),
            dir_or(ctx.output_dir, "output"),
            dir_or(ctx.temp_dir, "temp"),
        );
        let dirs = ImageDirs {
            input: &input,
            output: &output,
            temp: &temp,
        };
        let path = resolve_image(&dirs, &name).map_err(|e| input_error("image", e))?;
        let li = load_image_file(&path, &name, MAX_PIXELS).map_err(|e| input_error("image", e))?;
        Ok(NodeOutput::new()
            .with(tensor_of(&li.image)?)
            .with(tensor_of(&li.mask)?))
    }

    /// The name must resolve inside its directory to a PNG, JPEG or WebP file within the pixel limit.
    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        let Ok(name) = image_name(&v.literals()) else {
            return vec![];
        };
        let (input, output, temp) = (
            dir_or(v.host.input_dir, "input"),
            dir_or(v.host.output_dir, "output"),
            dir_or(v.host.temp_dir, "temp"),
        );
        let dirs = ImageDirs {
            input: &input,
            output: &output,
            temp: &temp,
        };
        match resolve_image(&dirs, &name).and_then(|p| probe_image(&p, &name, MAX_PIXELS)) {
            Ok(_) => vec![],
            Err(e) => vec![issue("image", e)],
        }
    }
}
