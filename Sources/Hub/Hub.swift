// Hub module.
