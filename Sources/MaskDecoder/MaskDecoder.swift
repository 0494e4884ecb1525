// MaskDecoder module.
