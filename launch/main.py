def run():
    print("hi")
