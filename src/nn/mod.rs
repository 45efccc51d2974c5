//! Layers with parameters and the paper's networks: V-Net, 3D U-Net, attention U-Net.
