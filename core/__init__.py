"""The job core every app builds on: job lifecycle, audit, progress, queueing, cancellation, dead-job reaping.

It knows no kind of job: each app registers its job rows and their clean-up
(core.registry) when Django starts, so the reaper and cancel_job never import
the apps above them.
"""
