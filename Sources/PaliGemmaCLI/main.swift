print("paligemma")
