"""Fine-tuning a pruned model by distillation from the dense one (the optional extra onnxprune[finetune]).

- ops.py: ONNX operators as torch functions;
- student.py: the pruned graph as a trainable torch module, and its weights written back into the graph;
- augment.py: label-free image augmentation;
- train.py: the distillation loop, held-out selection and the checked output.

Only this package imports torch; the rest of onnxprune runs without it.
"""
