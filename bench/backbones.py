"""SAM-family backbones and the shared on-disk embedding cache.

Interface every backbone implements (the SAM-based methods rely on exactly this):

* ``name``, ``input_size`` (256 for LiteMedSAM, 1024 for the ViTs), ``cache_key`` (backbone name +
  checkpoint digest + preprocessing version: the embedding cache's namespace);
* ``image_encoder``, ``prompt_encoder``, ``mask_decoder``: the frozen segment-anything modules;
* ``preprocess(image_uint8_HxW) -> 3×S×S float tensor`` (the backbone's own published preprocessing);
* ``box_to_input(box, shape) -> 1×4 tensor`` (xyxy in the model-input frame);
* ``dense_pe() -> 1×256×64×64``;
* ``decode(embeddings, sparse, dense) -> B×1×256×256`` low-resolution logits, one mask per image;
* ``to_image(low_res_logits, shape) -> B×1×H×W`` logits in the image's own frame (crop the padded frame,
  resize bilinearly; differentiable, so losses can be computed at the sample's resolution).
"""
