import sys

from compute_jobs.cli import main

sys.exit(main())
