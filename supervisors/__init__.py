"""supervisors"""
