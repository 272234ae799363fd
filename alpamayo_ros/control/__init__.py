"""ROS-free plan tracking: anchoring plans in the odometry frame, pure pursuit on the rear
axle, a PI speed loop, command shaping and the lockstep gate (numpy/scipy only)."""
