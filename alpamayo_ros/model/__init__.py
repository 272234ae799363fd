"""The Alpamayo-R1 model runtime (torch + transformers); never imports rclpy.

Import-light on purpose: importing this package does not import torch, so the core and
the tools can list or validate a checkpoint without paying for torch. Import
alpamayo_ros.model.runtime for the inference API (AlpamayoRuntime).
"""
