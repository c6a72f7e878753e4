import ArgumentParser
import HeraldServer
print("x")
