"""PyTorch's "Training a Classifier" CIFAR-10 tutorial, ported to minidl line by line.

    python examples/pytorch_cifar10_tutorial.py --data-dir ../shared/data

The tutorial's code is kept as it is written for PyTorch, with `import minidl as torch`;
the lines marked "minidl:" are the only ones that change (docs/pytorch.md says why): an
explicit random generator for the layers, minidl's CIFAR-10 loader in place of
torchvision's, and NumPy batches in place of a DataLoader.
"""
import argparse
import sys

import numpy as np

import minidl as torch
import minidl.nn as nn
import minidl.nn.functional as F
import minidl.optim as optim
from minidl.data import DatasetError, load_cifar10

rng = np.random.default_rng(0)   # minidl: every layer takes its generator (no global seed)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5, rng=rng)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, rng=rng)
        self.fc1 = nn.Linear(16 * 5 * 5, 120, rng=rng)
        self.fc2 = nn.Linear(120, 84, rng=rng)
        self.fc3 = nn.Linear(84, 10, rng=rng)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # flatten all dimensions except batch
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


def batches(images, labels, batch_size, shuffle):
    """minidl: the tutorial's DataLoader, as NumPy: ToTensor() then Normalize((0.5,) * 3, (0.5,) * 3)."""
    order = rng.permutation(len(images)) if shuffle else np.arange(len(images))
    for start in range(0, len(images), batch_size):
        chosen = order[start:start + batch_size]
        x = (images[chosen].astype(np.float32) / 255.0 - 0.5) / 0.5
        yield torch.tensor(x), torch.tensor(labels[chosen])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a folder holding cifar-10-batches-py/ (default: download)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--limit", type=int, default=None, help="train and test on the first N images only")
    parser.add_argument("--out", default="./cifar_net.pth", help="where the trained weights go")
    args = parser.parse_args(argv)
    try:
        data = load_cifar10(args.data_dir, val_size=0)   # minidl: in place of torchvision.datasets.CIFAR10
    except DatasetError as exc:
        print(f"pytorch_cifar10_tutorial: error: {exc}", file=sys.stderr)
        return 1
    classes = ('plane', 'car', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
    train_x, train_y = data.train_images[:args.limit], data.train_labels[:args.limit]
    test_x, test_y = data.test_images[:args.limit], data.test_labels[:args.limit]

    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    for epoch in range(args.epochs):  # loop over the dataset multiple times
        running_loss = 0.0
        for i, data_batch in enumerate(batches(train_x, train_y, args.batch_size, shuffle=True), 0):
            # get the inputs; data is a list of [inputs, labels]
            inputs, labels = data_batch

            # zero the parameter gradients
            optimizer.zero_grad()

            # forward + backward + optimize
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()

            # print statistics
            running_loss += loss.item()
            if i % 2000 == 1999:    # print every 2000 mini-batches
                print(f'[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 2000:.3f}')
                running_loss = 0.0
    print('Finished Training')

    torch.save(net.state_dict(), args.out)   # minidl: a pickle-free .npz under the name given
    net = Net()
    net.load_state_dict(torch.load(args.out))

    correct = 0
    total = 0
    correct_pred = {classname: 0 for classname in classes}
    total_pred = {classname: 0 for classname in classes}
    # since we're not training, we don't need to calculate the gradients for our outputs
    with torch.no_grad():
        for images, labels in batches(test_x, test_y, args.batch_size, shuffle=False):
            # calculate outputs by running images through the network
            outputs = net(images)
            # the class with the highest energy is what we choose as prediction
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
            for label, prediction in zip(labels, predicted):
                if label == prediction:
                    correct_pred[classes[label]] += 1
                total_pred[classes[label]] += 1

    print(f'Accuracy of the network on the {total} test images: {100 * correct // total} %')
    for classname, correct_count in correct_pred.items():
        accuracy = 100 * float(correct_count) / max(total_pred[classname], 1)
        print(f'Accuracy for class: {classname:5s} is {accuracy:.1f} %')
    return 0


if __name__ == "__main__":
    sys.exit(main())
