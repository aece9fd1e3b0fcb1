//! FLOPs of one forward, counted analytically.

use odelt_nodes::{Dit, DitConfig};

/// Multiply-add FLOPs (2 per MAC) of one forward computing `blocks` DiT blocks on a batch of `b`.
/// adaLN projections act once per sample (on the conditioning), everything else once per token.
pub fn forward_flops(cfg: &DitConfig, blocks: usize, b: usize) -> f64 {
    let b = b as f64;
    let t = cfg.num_tokens() as f64;
    let h = cfg.hidden_size as f64;
    let mlp = cfg.mlp_hidden as f64;
    let heads = cfg.num_heads as f64;
    let hd = cfg.head_dim() as f64;
    let pd = cfg.patch_dim() as f64;
    let freq = 256.0;
    let ada_ln = 2.0 * b * h * 6.0 * h;
    let per_token = 2.0 * b * t * (4.0 * h * h + 2.0 * h * mlp);
    let attention = 2.0 * 2.0 * b * heads * t * t * hd;
    let block = ada_ln + per_token + attention;
    let patch_embed = 2.0 * b * t * pd * h;
    let timestep_embedders = 2.0 * (2.0 * b * (freq * h + h * h));
    let final_layer = 2.0 * b * h * 2.0 * h + 2.0 * b * t * h * pd;
    blocks as f64 * block + patch_embed + timestep_embedders + final_layer
}

/// Blocks one forward at length `l` computes.
pub fn computed_blocks(cfg: &DitConfig, model: &Dit, l: usize) -> usize {
    if cfg.length_embedding {
        cfg.resident_blocks(l)
    } else {
        model.resident_blocks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_scale_with_blocks_and_batch() {
        let cfg = DitConfig::dit_b(1000);
        let f = |blocks, b| forward_flops(&cfg, blocks, b);
        // Linear in the batch, affine in the block count.
        assert!((f(12, 8) / f(12, 1) - 8.0).abs() < 1e-9);
        let per_block = f(5, 1) - f(4, 1);
        assert!(((f(12, 1) - f(4, 1)) / per_block - 8.0).abs() < 1e-9);
        // The adaLN projection acts per sample: doubling the tokens must not double its cost.
        let mut big = cfg.clone();
        big.input_size *= 2; // 4x tokens
        let h = cfg.hidden_size as f64;
        let ada = 2.0 * h * 6.0 * h;
        let per_block_big = forward_flops(&big, 1, 1) - forward_flops(&big, 0, 1);
        let t = cfg.num_tokens() as f64;
        let linear_part = 2.0 * t * (4.0 * h * h + 2.0 * h * cfg.mlp_hidden as f64);
        let attention = 4.0 * t * t * h;
        assert!((per_block - (ada + linear_part + attention)).abs() < 1.0);
        assert!((per_block_big - (ada + 4.0 * linear_part + 16.0 * attention)).abs() < 1.0);
    }
}
