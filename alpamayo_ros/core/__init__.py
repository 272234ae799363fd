"""ROS-free, torch-free core: plain numpy data, time alignment, geometry, metrics."""
