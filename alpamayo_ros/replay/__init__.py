"""The stepped-time replay of bags through the planner core (no ROS graph, no clock): the
engine, jobs and workers, scoring against the bag's odometry, the report and the output
files. The command is alpamayo_ros.tools.replay.
"""
