from psychinterp.cli import main

main()
