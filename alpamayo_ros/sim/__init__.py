"""ROS-free closed-loop simulator pieces: the route world, a kinematic bicycle with actuator
lag, rendered road cameras, the stepped simulation and the closed-loop metrics/report."""
