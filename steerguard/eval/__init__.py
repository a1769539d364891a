"""Steering efficacy evaluation: sweep strengths, judge answers independently, report costs."""
