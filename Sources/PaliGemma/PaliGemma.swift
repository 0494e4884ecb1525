// PaliGemma module.
