import torch

torch.set_num_threads(1)  # small tensors: extra threads only add contention on shared cores
