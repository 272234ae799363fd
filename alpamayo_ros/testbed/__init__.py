"""The stand-ins around the product nodes (planner, controller) for the demo, CI and
closed-loop runs: the CARLA-bridge simulator, synthetic sensors and their scenario
publisher, the bag player, the route oracle, the topic recorder and the closed-loop
process stack. rclpy nodes on top of ros/ (they use its QoS, conversions and process
lifecycle) and sim/.
"""
