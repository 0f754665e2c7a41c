"""AutoencoderKL: encodes reference images to latents and decodes latents to pixels."""
