"""A PyTorch-native RASP compiler (in the spirit of tracr) whose compiled models are ground-truth circuits."""
