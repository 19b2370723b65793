import sys

from compute_jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
