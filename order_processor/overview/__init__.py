"""The delivery overview: where one order went (`trace`), how each lane is doing (`lanes`, and
the lane gauges the `lane_metrics` function reports for the workbook and the alerts)."""
