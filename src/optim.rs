//! Optimisers and schedules: Adam with L2 weight decay exactly as `torch.optim.Adam`, StepLR.
